package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// piece is data written into a test image at off.
type piece struct {
	off, n int64
}

// sparseImage writes a sparse raw image of size bytes with random data at
// the pieces' places and explicit zeros (data, not holes) at zeroAt, and
// returns its bytes.
func sparseImage(t *testing.T, path string, size int64, seed uint64, pieces []piece, zeroAt []piece) []byte {
	t.Helper()
	want := make([]byte, size)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, z := range zeroAt {
		if _, err := f.WriteAt(make([]byte, z.n), z.off); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(seed, 7))
	for _, p := range pieces {
		b := make([]byte, p.n)
		for i := range b {
			b[i] = byte(r.Uint32()) | 1 // never a zero byte
		}
		copy(want[p.off:], b)
		if _, err := f.WriteAt(b, p.off); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

// allocated is what volume name's Allocated says of its whole range.
func allocated(t *testing.T, e *e2etest.Env, name string) []volclient.Extent {
	t.Helper()
	vc, err := volclient.DialConfig(e.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Disconnect()
	ctx := context.Background()
	v, err := vc.OpenSession(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	ext, err := v.Allocated(ctx, 0, v.Size)
	if err != nil {
		t.Fatal(err)
	}
	return ext
}

// sameImage fails unless file holds want, followed by zeros up to size.
func sameImage(t *testing.T, what string, got, want []byte, size int) {
	t.Helper()
	if len(got) != size {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), size)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s: differs from the image at byte %d", what, i)
	}
	if i := bytes.IndexFunc(got[len(want):], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("%s: non-zero byte past the image's end, at %d", what, len(want)+i)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// usedBytes is the disk space a file takes (st_blocks).
func usedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// A sparse image goes in and out: the volume stores only the blocks that
// hold data (not the holes, not the explicit zeros), the exported file is
// the same bytes and as sparse; through stdin and stdout as well; a
// snapshot exports what it was, also after --existing wrote another image
// over the volume.
func TestImportExportSparse(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	dir := t.TempDir()
	const mib = 1 << 20
	// 4 MiB blocks. Data in blocks 0, 1, 3 and 4 (a run across 16 MiB),
	// and 6 (the tail); block 2 holds written zeros, block 5 is a hole.
	size := int64(24*mib + 1000) // the volume: rounded up to 512
	pieces := []piece{{0, 64 << 10}, {5*mib + 4096, 100 << 10}, {13 * mib, 4 * mib}, {24*mib + 100, 900}}
	img := filepath.Join(dir, "image.raw")
	want := sparseImage(t, img, size, 1, pieces, []piece{{8 * mib, 4 * mib}})
	volSize := int((size + 511) / 512 * 512)

	var st volclient.ImportStats
	if err := json.Unmarshal([]byte(e.Must("vlmc", "import", "--json", img, "disk1")), &st); err != nil {
		t.Fatal(err)
	}
	var data uint64
	for _, p := range pieces {
		data += uint64(p.n)
	}
	if st.Volume != "disk1" || !st.Created || st.VolumeSize != uint64(volSize) || st.InputBytes != uint64(size) ||
		st.BytesWritten < data || st.BytesWritten > data+4*4096 || st.ZeroBytesSkipped != uint64(size)-st.BytesWritten ||
		st.BytesRead > 9*mib { // the holes were not read

		t.Errorf("import stats: %+v (data %d bytes)", st, data)
	}
	blocks := []volclient.Extent{{Offset: 0, Size: 8 * mib}, {Offset: 12 * mib, Size: 8 * mib}, {Offset: 24 * mib, Size: uint64(volSize) - 24*mib}}
	if got := allocated(t, e, "disk1"); fmt.Sprint(got) != fmt.Sprint(blocks) {
		t.Errorf("allocated after import: %v, want only the data blocks %v", got, blocks)
	}

	out := filepath.Join(dir, "out.raw")
	var xs volclient.ExportStats
	if err := json.Unmarshal([]byte(e.Must("vlmc", "export", "--json", "disk1", out)), &xs); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, "export", got, want, volSize)
	// Sparse: the file uses about its data (64 KiB runs), not its size.
	if used := usedBytes(t, out); used > int64(data)+8*(64<<10) {
		t.Errorf("exported file uses %d bytes on disk for %d bytes of data: not sparse", used, data)
	}
	if !xs.Sparse || xs.BytesWritten+xs.ZeroBytesSkipped != uint64(volSize) || xs.BytesRead != 16*mib+uint64(volSize)-24*mib {
		t.Errorf("export stats: %+v", xs)
	}
	// An existing file is kept unless --force.
	fails(t, e, []string{"export", "disk1", out}, "--force")
	e.Must("vlmc", "export", "--force", "disk1", out)

	// stdin (a pipe) in, stdout out.
	vlmc := testbin.Path(t, "vlmc")
	cmd := exec.Command(vlmc, "--config", e.Config, "import", "-", "disk2", "--size", "30M")
	cmd.Stdin = bytes.NewReader(want) // a pipe
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import from stdin: %v\n%s", err, b)
	}
	blocks2 := append(blocks[:2:2], volclient.Extent{Offset: 24 * mib, Size: 4 * mib}) // the image's tail is in a whole block now
	if got := allocated(t, e, "disk2"); fmt.Sprint(got) != fmt.Sprint(blocks2) {
		t.Errorf("allocated after import from stdin: %v, want %v", got, blocks2)
	}
	cmd = exec.Command(vlmc, "--config", e.Config, "export", "disk2", "-")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // a pipe: zeros written
	if err := cmd.Run(); err != nil {
		t.Fatalf("export to stdout: %v\n%s", err, stderr.String())
	}
	sameImage(t, "export to stdout", stdout.Bytes(), want, 30*mib)

	// A snapshot keeps what it was while --existing writes another image
	// over the volume: data where it had zeros, zeros (a hole, written
	// zeros) where it had data, the tail past the new image left.
	e.Must("vlmc", "snapshot", "disk1", "disk1-snap")
	img2 := filepath.Join(dir, "image2.raw")
	size2 := int64(20 * mib)
	want2 := sparseImage(t, img2, size2, 2, []piece{{9 * mib, 8192}, {18 * mib, mib}}, []piece{{mib, 4 * mib}})
	fails(t, e, []string{"import", "--existing", img, "nosuchvolume"}, "nosuchvolume")
	e.Must("vlmc", "import", "--existing", img2, "disk1")
	snapOut := filepath.Join(dir, "snap.raw")
	e.Must("vlmc", "export", "disk1-snap", snapOut)
	got, _ = os.ReadFile(snapOut)
	sameImage(t, "export of the snapshot", got, want, volSize)
	e.Must("vlmc", "export", "--force", "disk1", out)
	got, _ = os.ReadFile(out)
	want2 = append(want2, want[size2:]...) // the tail stays
	sameImage(t, "export after import --existing", got, want2, volSize)
	// The old data's blocks 0, 1, 3 are zero blocks again (trimmed); 2
	// has the new data, 4 old and new, 6 the tail.
	if got := allocated(t, e, "disk1"); fmt.Sprint(got) != fmt.Sprint([]volclient.Extent{{Offset: 8 * mib, Size: 4 * mib}, {Offset: 16 * mib, Size: 4 * mib}, {Offset: 24 * mib, Size: uint64(volSize) - 24*mib}}) {
		t.Errorf("allocated after import --existing: %v", got)
	}
}

// Bad input is refused before anything is made, and a failed or
// interrupted import leaves no volume behind.
func TestImportRefusesAndCleansUp(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-img", "qemu-nbd", "nbdcopy")
	e := e2etest.New(t, "host-a", "")
	e.Start()
	dir := t.TempDir()
	vlmc := testbin.Path(t, "vlmc")
	noVolume := func(name string) {
		t.Helper()
		for _, n := range strings.Fields(e.Must("vlmc", "list")) {
			if n == name {
				t.Errorf("volume %s left behind", name)
			}
		}
	}

	// A qcow2 image: refused, with the command that converts it; which
	// works, and so does the pipe the message shows.
	q := filepath.Join(dir, "disk.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", q, "16M")
	if err := testutil.QemuIOArgs(t, []string{"-f", "qcow2", q}, "write -P 0x5a 3M 1M"); err != nil {
		t.Fatal(err)
	}
	convert := fmt.Sprintf("qemu-img convert -O raw %s %s.raw", q, q)
	fails(t, e, []string{"import", q, "fromqcow"}, convert)
	fails(t, e, []string{"import", q, "fromqcow"}, "a qcow2 image, not raw")
	noVolume("fromqcow")
	testutil.Run(t, "sh", "-c", convert)
	e.Must("vlmc", "import", q+".raw", "fromqcow")
	pipe := fmt.Sprintf("nbdcopy -- [ qemu-nbd -r -f qcow2 %s ] - | %s --config %s import - fromqcow2 --size 16777216B", q, vlmc, e.Config)
	out, err := e.Run("vlmc", "import", q, "fromqcow2")
	if err == nil || !strings.Contains(out, "nbdcopy -- [ qemu-nbd -r -f qcow2 "+q+" ] - | vlmc import - fromqcow2 --size 16777216B") {
		t.Errorf("import of qcow2: no pipe shown:\n%s", out)
	}
	testutil.Run(t, "sh", "-c", pipe)
	raw, _ := os.ReadFile(q + ".raw")
	for _, v := range []string{"fromqcow", "fromqcow2"} {
		cmd := exec.Command(vlmc, "--config", e.Config, "export", v, "-")
		got, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		sameImage(t, "export of "+v, got, raw, len(raw))
	}

	// --size smaller than the input: refused naming the volume and sizes.
	img := filepath.Join(dir, "image.raw")
	sparseImage(t, img, 3<<20, 3, []piece{{0, 4096}}, nil)
	fails(t, e, []string{"import", img, "small", "--size", "2M"}, `volume "small": size 2097152 bytes is smaller than "`+img+`" (3145728 bytes)`)
	noVolume("small")
	fails(t, e, []string{"import", "-", "nosize"}, "--size")
	noVolume("nosize")

	// A pipe longer than --size fails once past the end: the volume it
	// made is removed, and the error says so.
	cmd := exec.Command(vlmc, "--config", e.Config, "import", "-", "toolong", "--size", "2M")
	cmd.Stdin = io.LimitReader(randReader(9), 7<<20)
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), `more than the volume's 2097152 bytes`) || !strings.Contains(string(b), `the new volume "toolong" was removed`) {
		t.Errorf("import of a pipe longer than --size: %v\n%s", err, b)
	}
	noVolume("toolong")

	// Interrupted (SIGINT) while waiting for more input: removed too.
	cmd = exec.Command(vlmc, "--config", e.Config, "import", "-", "stopped", "--size", "64M")
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var outb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if _, err := io.Copy(w, io.LimitReader(randReader(10), 9<<20)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "data written into the new volume", func() bool {
		out, err := e.Run("vlmc", "info", "stopped")
		return err == nil && strings.Contains(out, "locked by:  host-a")
	})
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	w.Close()
	if err == nil || !strings.Contains(outb.String(), "interrupted by interrupt") || !strings.Contains(outb.String(), `the new volume "stopped" was removed`) {
		t.Errorf("interrupted import: %v\n%s", err, outb.String())
	}
	noVolume("stopped")
}

// randReader is an endless stream of random bytes.
func randReader(seed byte) io.Reader {
	var k [32]byte
	k[0] = seed
	return rand.NewChaCha8(k)
}

// The import/export benchmark (scripts/bench-import.sh) works: its short
// mode (a 64 MiB image, one round) imports and exports with vlmc and with
// qemu-img through nbdd, checks every copy against the image and prints
// both rows. (Its figures are not checked: no timing in tests.)
func TestBenchImportShort(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-img", "python3")
	cmd := exec.Command("../scripts/bench-import.sh", "--short", t.TempDir())
	cmd.Env = append(os.Environ(), "ARCHIPELAGO_BIN="+testbin.Dir(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench-import.sh --short: %v\n%s", err, out)
	}
	for _, row := range []string{"\nimport ", "\nexport ", "round 1: import", "export sparse:"} {
		if !strings.Contains(string(out), row) {
			t.Errorf("bench-import.sh --short: no %q in its output:\n%s", row, out)
		}
	}
}
