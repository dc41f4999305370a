package volclient_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// Import and Export through the Go API, on volumes of 64 KiB blocks (a
// request covers 16 blocks): from a bytes.Reader (read at offsets), into
// a bytes.Buffer (a stream) and a file (sparse); into an existing volume;
// and what they refuse, leaving what was there alone.
func TestImportExportAPI(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{BlockSize: 64 << 10})
	c, ctx := client(t, s), t.Context()
	const kib = 1 << 10
	img := make([]byte, 5*mib+300)
	copy(img[100*kib:], testutil.Pattern(10*kib, 1))      // block 1
	copy(img[1*mib-kib:], testutil.Pattern(3*kib, 2))     // blocks 15, 16
	copy(img[3*mib+64*kib:], testutil.Pattern(64*kib, 3)) // block 49 exactly
	copy(img[5*mib+10:], testutil.Pattern(200, 4))        // the tail, block 80
	var calls int
	st, err := c.Import(ctx, bytes.NewReader(img), "imp", volclient.ImportOptions{Progress: func(done, total uint64) {
		calls++
		if total != uint64(len(img)) || done > total {
			t.Errorf("progress %d of %d", done, total)
		}
	}})
	ok(t, "Import", err)
	if st.VolumeSize != 5*mib+512 || !st.Created || st.InputBytes != uint64(len(img)) || calls == 0 {
		t.Errorf("import stats %+v, %d progress calls", st, calls)
	}
	v, err := c.OpenSession(ctx, "imp")
	ok(t, "OpenSession", err)
	ext, err := v.Allocated(ctx, 0, v.Size)
	ok(t, "Allocated", err)
	want := []volclient.Extent{{Offset: 64 * kib, Size: 64 * kib}, {Offset: 960 * kib, Size: 128 * kib},
		{Offset: 3*mib + 64*kib, Size: 64 * kib}, {Offset: 5 * mib, Size: 512}}
	if !slices.Equal(ext, want) {
		t.Errorf("allocated %v, want %v", ext, want)
	}
	ok(t, "Close", v.Close(ctx))

	var buf bytes.Buffer
	xs, err := c.Export(ctx, "imp", &buf, volclient.ExportOptions{})
	ok(t, "Export", err)
	if xs.Sparse || xs.BytesWritten != 5*mib+512 || !bytes.Equal(buf.Bytes()[:len(img)], img) || !bytes.Equal(buf.Bytes()[len(img):], make([]byte, 212)) {
		t.Errorf("export to a stream: %+v, %d bytes, equal %v", xs, buf.Len(), bytes.Equal(buf.Bytes()[:len(img)], img))
	}
	path := filepath.Join(t.TempDir(), "out.raw")
	f, err := os.Create(path)
	ok(t, "Create", err)
	xs, err = c.Export(ctx, "imp", f, volclient.ExportOptions{Workers: 3})
	ok(t, "Export", err)
	f.Close()
	got, _ := os.ReadFile(path)
	if !xs.Sparse || xs.BytesRead != 256*kib+512 || !bytes.Equal(got, buf.Bytes()) {
		t.Errorf("export to a file: %+v, equal %v", xs, bytes.Equal(got, buf.Bytes()))
	}

	// Into the existing volume: another image, zeros where the first had
	// data; the tail past it stays.
	img2 := make([]byte, 4*mib)
	copy(img2[2*mib:], testutil.Pattern(mib, 5))
	fails(t, "Import over an existing name", func() error {
		_, err := c.Import(ctx, bytes.NewReader(img2), "imp", volclient.ImportOptions{})
		return err
	}(), errs.ErrExists, "imp")
	_, err = c.Import(ctx, bytes.NewReader(img2), "imp", volclient.ImportOptions{Existing: true})
	ok(t, "Import Existing", err)
	buf.Reset()
	_, err = c.Export(ctx, "imp", &buf, volclient.ExportOptions{})
	ok(t, "Export", err)
	want2 := append(slices.Clone(img2), img[len(img2):]...)
	if !bytes.Equal(buf.Bytes()[:len(want2)], want2) {
		t.Errorf("after Import Existing: differs from the second image")
	}

	// Refusals leave nothing made and nothing removed.
	ok(t, "Snapshot", c.Snapshot(ctx, "imp", "imp-snap"))
	fails(t, "Import into a snapshot", func() error {
		_, err := c.Import(ctx, bytes.NewReader(img2), "imp-snap", volclient.ImportOptions{Existing: true})
		return err
	}(), errs.ErrReadOnly, "imp-snap")
	fails(t, "Import larger than Size", func() error {
		_, err := c.Import(ctx, bytes.NewReader(img2), "small", volclient.ImportOptions{Size: mib})
		return err
	}(), errs.ErrTooLarge, `volume "small": size 1048576 bytes`)
	fails(t, "Import of a stream without Size", func() error {
		_, err := c.Import(ctx, io.MultiReader(strings.NewReader(strings.Repeat("x", 1000))), "nosize", volclient.ImportOptions{})
		return err
	}(), errs.ErrInvalid, "--size")
	names, err := c.List(ctx)
	ok(t, "List", err)
	if !slices.Equal(names, []string{"imp", "imp-snap"}) {
		t.Errorf("volumes after the refusals: %v", names)
	}
}

// Every image format qemu-img makes, other than raw, is refused before a
// volume is made, naming the format and the command that converts it.
func TestImportRefusesImageFormats(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-img")
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	dir := t.TempDir()
	for _, format := range []string{"qcow2", "qed", "vmdk", "vdi", "vhdx", "vpc"} {
		path := filepath.Join(dir, "disk."+format)
		testutil.Run(t, "qemu-img", "create", "-f", format, path, "16M")
		f, err := os.Open(path)
		ok(t, "Open", err)
		_, err = c.Import(ctx, f, "disk-"+format, volclient.ImportOptions{Source: path})
		f.Close()
		fails(t, "Import of "+format, err, errs.ErrInvalid,
			fmt.Sprintf("is a %s image, not raw: convert it first: qemu-img convert -O raw %s %s.raw", format, path, path))
		if format == "qcow2" && !strings.Contains(err.Error(), "--size 16777216B") {
			t.Errorf("Import of qcow2: the pipe does not give the image's size: %v", err)
		}
	}
	if names, err := c.List(ctx); err != nil || len(names) != 0 {
		t.Errorf("volumes after the refusals: %v %v", names, err)
	}
}
