package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// Changed blocks through vlmc on two installations (files): a full and
// an incremental export-diff from A, import-diff into B, B's volume and
// snapshots equal A's; vlmc diff --json; bad diffs refused with their
// byte offset and no snapshot taken.

const rdMiB = 1 << 20

// rdClient is a client of e's vlmcd for the test's reads and writes.
func rdClient(t *testing.T, e *e2etest.Env) *volclient.Client {
	t.Helper()
	c, err := volclient.DialConfig(e.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Disconnect)
	return c
}

// rdSession runs fn with a session of volume name.
func rdSession(t *testing.T, c *volclient.Client, name string, fn func(ctx context.Context, v *volclient.Volume) error) {
	t.Helper()
	ctx := t.Context()
	v, err := c.OpenSession(ctx, name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer v.Close(context.WithoutCancel(ctx))
	if err := fn(ctx, v); err != nil {
		t.Fatalf("volume %s: %v", name, err)
	}
}

func rdWrite(t *testing.T, c *volclient.Client, name string, off uint64, p []byte) {
	t.Helper()
	rdSession(t, c, name, func(ctx context.Context, v *volclient.Volume) error {
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			return err
		}
		return v.Flush(ctx)
	})
}

func rdTrim(t *testing.T, c *volclient.Client, name string, off, n uint64) {
	t.Helper()
	rdSession(t, c, name, func(ctx context.Context, v *volclient.Volume) error { return v.Trim(ctx, off, n) })
}

// rdRead reads the whole of volume or snapshot name.
func rdRead(t *testing.T, c *volclient.Client, name string) []byte {
	t.Helper()
	var b []byte
	rdSession(t, c, name, func(ctx context.Context, v *volclient.Volume) error {
		b = make([]byte, v.Size)
		return v.ReadAt(ctx, b, 0)
	})
	return b
}

// rdSame fails unless volume an of a and bn of b read the same.
func rdSame(t *testing.T, a *volclient.Client, an string, b *volclient.Client, bn string) {
	t.Helper()
	x, y := rdRead(t, a, an), rdRead(t, b, bn)
	if !bytes.Equal(x, y) {
		t.Fatalf("%s (%d bytes) and %s (%d bytes) differ: %s", an, len(x), bn, len(y), firstDiffAt(x, y))
	}
}

func firstDiffAt(x, y []byte) string {
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return "first at byte " + itoa(uint64(i))
		}
	}
	return "sizes"
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestDiffExportImportFiles(t *testing.T) {
	a := e2etest.New(t, "host-a", "")
	b := e2etest.New(t, "host-b", "")
	a.Start()
	b.Start()
	ca, cb := rdClient(t, a), rdClient(t, b)
	dir := t.TempDir()
	const bs = 4 * rdMiB // the default block size

	// A: a volume with data in blocks 0, 1 and 3; snapshot s1; the full
	// diff into B's empty volume (created small: the diff resizes it).
	a.Must("vlmc", "create", "src", "--size", "24M")
	rdWrite(t, ca, "src", 0, testutil.Pattern(5*rdMiB, 1))
	rdWrite(t, ca, "src", 13*rdMiB+5, testutil.Pattern(1000, 2))
	a.Must("vlmc", "snapshot", "src", "s1")
	full := filepath.Join(dir, "full.diff")
	a.Must("vlmc", "export-diff", "s1", full)
	b.Must("vlmc", "create", "dst", "--size", "1M")
	out := b.Must("vlmc", "import-diff", "--json", full, "dst")
	var st volclient.DiffTransfer
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.To != "s1" || st.From != "" || !st.Resized || st.Size != 24*rdMiB {
		t.Fatalf("import-diff of the full diff: %v %+v\n%s", err, st, out)
	}
	rdSame(t, ca, "s1", cb, "s1")
	rdSame(t, ca, "s1", cb, "dst")

	// A: overwrite part of block 1, trim block 3 (data) and blocks 4-5
	// (zero before: no change), grow to 40 MiB and write past the old
	// end; snapshot s2. vlmc diff says exactly that, in whole blocks.
	rdWrite(t, ca, "src", 6*rdMiB, testutil.Pattern(rdMiB, 3))
	rdTrim(t, ca, "src", 3*bs, 3*bs)
	a.Must("vlmc", "resize", "src", "--size", "40M")
	rdWrite(t, ca, "src", 37*rdMiB, testutil.Pattern(10, 4))
	a.Must("vlmc", "snapshot", "src", "s2")
	var rep volclient.DiffReport
	if err := json.Unmarshal([]byte(a.Must("vlmc", "diff", "s2", "--from", "s1", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	want := []volclient.DiffExtent{{Offset: bs, Size: bs}, {Offset: 3 * bs, Size: bs, Zero: true}, {Offset: 9 * bs, Size: bs}}
	if !slices.Equal(rep.Extents, want) || rep.Name != "s2" || rep.From != "s1" || rep.Size != 40*rdMiB || rep.FromSize != 24*rdMiB ||
		rep.DataBytes != 2*bs || rep.ZeroBytes != bs {
		t.Fatalf("vlmc diff s2 --from s1 --json: %+v, want extents %+v", rep, want)
	}
	lines := a.Must("vlmc", "diff", "src", "--from", "s1")
	if wantText := "4194304 4194304 data\n12582912 4194304 zero\n37748736 4194304 data"; !strings.Contains(lines, wantText) {
		t.Fatalf("vlmc diff src --from s1:\n%s\nwant the lines\n%s", lines, wantText)
	}

	// Refusals, each leaving B's volume as it was and taking no snapshot.
	inc := filepath.Join(dir, "inc.diff")
	a.Must("vlmc", "export-diff", "--from", "s1", "s2", inc)
	raw, err := os.ReadFile(inc)
	if err != nil {
		t.Fatal(err)
	}
	b.Must("vlmc", "create", "other", "--size", "24M")
	rdWrite(t, cb, "other", 0, testutil.Pattern(rdMiB, 9))
	b.Must("vlmc", "snapshot", "other", "s1x")
	before := rdRead(t, cb, "other")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, file, want string
	}{
		{"truncated", write("trunc.diff", raw[:len(raw)-100]), "byte " + itoa(uint64(len(raw)-100)) + ": the input ends inside the 'w' record"},
		{"unknown tag", write("tag.diff", append(slices.Clone(raw[:len(raw)-1]), 'X', 'e')), "byte " + itoa(uint64(len(raw)-1)) + ": unknown record tag 'X'"},
		{"missing from", write("from.diff", bytes.Replace(raw, []byte("f\x02\x00\x00\x00s1"), []byte("f\x02\x00\x00\x00s9"), 1)), `snapshot "s9", which does not exist`},
		{"not its base", inc, `volume "other" changed since snapshot "s1"`},
		{"to exists", write("to.diff", bytes.Replace(raw, []byte("t\x02\x00\x00\x00s2"), []byte("t\x03\x00\x00\x00s1x"), 1)), `snapshot "s1x", which exists already`},
		{"not a diff", write("raw.img", testutil.Pattern(4096, 5)), "byte 0: not an RBD diff"},
		// A range past the size, in a stream without a size record.
		{"past the end", write("big.diff", []byte("rbd diff v1\nz\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00e")),
			`byte 12: 'z' record of 1048576 bytes at 33554432: beyond volume "other"'s size 25165824`},
	} {
		out, err := b.Run("vlmc", "import-diff", c.file, "other")
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("import-diff of a %s diff: %v\n%s\nwant an error saying %q", c.name, err, out, c.want)
		}
		if _, err := cb.Info(t.Context(), "s2"); err == nil {
			t.Fatalf("import-diff of a %s diff took a snapshot", c.name)
		}
		if ext, err := cb.Diff(t.Context(), "other", "s1x"); err != nil || len(ext) != 0 {
			t.Errorf("import-diff of a %s diff changed the volume: %v %v", c.name, ext, err)
		}
	}
	if got := rdRead(t, cb, "other"); !bytes.Equal(got, before) {
		t.Errorf("the refused import-diffs changed the volume")
	}

	// The incremental diff, through a pipe this time.
	vlmc := testbin.Path(t, "vlmc")
	pipe := exec.Command("sh", "-c", `"$0" --config "$1" export-diff --from s1 s2 - | "$0" --config "$2" import-diff - dst`, vlmc, a.Config, b.Config)
	if o, err := pipe.CombinedOutput(); err != nil {
		t.Fatalf("export-diff | import-diff: %v\n%s", err, o)
	}
	rdSame(t, ca, "s2", cb, "s2")
	rdSame(t, ca, "s2", cb, "dst")
	rdSame(t, ca, "s1", cb, "s1") // B's s1 kept its content
	// The same diff again: its end snapshot exists.
	if out, err := b.Run("vlmc", "import-diff", inc, "dst"); err == nil || !strings.Contains(out, `"s2", which exists already`) {
		t.Errorf("import-diff applied twice: %v\n%s", err, out)
	}

	// Version 2 of the format, read back by import-diff; and --force,
	// which applies a diff to a volume that does not hold its start:
	// "other" becomes what it held with the diff's ranges applied.
	b.Must("vlmc", "remove", "s2")
	v2 := filepath.Join(dir, "v2.diff")
	a.Must("vlmc", "export-diff", "--format", "2", "--from", "s1", "s2", v2)
	if b, _ := os.ReadFile(v2); !bytes.HasPrefix(b, []byte("rbd diff v2\n")) {
		t.Fatalf("--format 2 wrote %q", b[:min(len(b), 12)])
	}
	b.Must("vlmc", "import-diff", "--force", v2, "other")
	wantOther := make([]byte, 40*rdMiB)
	copy(wantOther, before)
	s2 := rdRead(t, ca, "s2")
	for _, x := range rep.Extents {
		if x.Zero {
			clear(wantOther[x.Offset : x.Offset+x.Size])
		} else {
			copy(wantOther[x.Offset:x.Offset+x.Size], s2[x.Offset:])
		}
	}
	if got := rdRead(t, cb, "s2"); !bytes.Equal(got, wantOther) {
		t.Fatalf("import-diff --force: other's s2 is not its old content with the diff applied: %s", firstDiffAt(got, wantOther))
	}
	if _, err := b.Run("vlmc", "diff", "other", "--from", "nope"); err == nil {
		t.Errorf("vlmc diff from a missing snapshot succeeded")
	}
}
