//go:build ceph

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// TestDiffInteropRBD moves incremental backups between our volumes and
// an image of the real rbd tool on the micro cluster (its pool; our stack
// runs on files): our export-diff fed to rbd import-diff gives an image
// whose snapshots rbd export reads as ours (a full diff, then an
// incremental one that writes, trims, grows); rbd export-diff of changes
// made through librbd (qemu-io: writes, a discard of a whole object and
// of part of one, a grow) applied by our import-diff gives a volume and
// snapshot equal to rbd's, incrementally and in full.
func TestDiffInteropRBD(t *testing.T) {
	ro := radosOptions(t, "rbddiff")
	for _, tool := range []string{"rbd", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	conf := ro.CephConf
	img := fmt.Sprintf("%s/rbddiff-%d", ro.Pool, os.Getpid())
	run := func(prog string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	rbd := func(args ...string) string {
		t.Helper()
		return run("rbd", append([]string{"-c", conf, "--no-progress"}, args...)...)
	}
	qemuIO := func(cmds ...string) {
		t.Helper()
		args := []string{"-f", "raw"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		run("qemu-io", append(args, fmt.Sprintf("rbd:%s:conf=%s", img, conf))...)
	}
	t.Cleanup(func() {
		exec.Command("rbd", "-c", conf, "--no-progress", "snap", "purge", img).Run()
		exec.Command("rbd", "-c", conf, "--no-progress", "rm", img).Run()
	})

	e := e2etest.New(t, "host-a", "")
	e.Start()
	c := rdClient(t, e)
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	// same compares rbd's export of snap with our volume or snapshot name
	// (read through vlmc export, and through volclient).
	same := func(snap, name string) {
		t.Helper()
		theirs, ours := file(snap+".rbd.raw"), file(name+".ours.raw")
		os.Remove(theirs)
		rbd("export", img+"@"+snap, theirs)
		e.Must("vlmc", "export", "--force", name, ours)
		a, err := os.ReadFile(theirs)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(ours)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("rbd export %s@%s (%d bytes) and our %s (%d bytes) differ: %s", img, snap, len(a), name, len(b), firstDiffAt(a, b))
		}
		if v := rdRead(t, c, name); !bytes.Equal(v, a) {
			t.Fatalf("our %s read through volclient differs from rbd's %s: %s", name, snap, firstDiffAt(v, a))
		}
	}

	// Ours to rbd: a full diff (partial blocks written), then an
	// incremental one.
	e.Must("vlmc", "create", "v", "--size", "20M")
	rdWrite(t, c, "v", 0, testutil.Pattern(5*rdMiB, 1))
	rdWrite(t, c, "v", 13*rdMiB+5, testutil.Pattern(1000, 2))
	e.Must("vlmc", "snapshot", "v", "s1")
	e.Must("vlmc", "export-diff", "s1", file("s1.diff"))
	rbd("create", "--size", "1M", img) // import-diff resizes it
	rbd("import-diff", file("s1.diff"), img)
	same("s1", "s1")

	rdWrite(t, c, "v", 6*rdMiB+100, testutil.Pattern(rdMiB, 3)) // block 1
	rdTrim(t, c, "v", 0, 4*rdMiB)                               // block 0: data, trimmed
	rdTrim(t, c, "v", 16*rdMiB, 4*rdMiB)                        // block 4: zero already
	e.Must("vlmc", "resize", "v", "--size", "28M")
	rdWrite(t, c, "v", 25*rdMiB, testutil.Pattern(3*rdMiB, 4))
	e.Must("vlmc", "snapshot", "v", "s2")
	e.Must("vlmc", "export-diff", "--from", "s1", "s2", file("s2.diff"))
	rbd("import-diff", file("s2.diff"), img)
	same("s2", "s2")
	same("s1", "s1") // rbd's s1 unchanged by the increment

	// rbd to ours: changes through librbd on the image's head, a
	// snapshot s3, rbd export-diff from s2 to s3, our import-diff into
	// v (which holds s2: unchanged since).
	qemuIO("write -P 0xab 8M 4096", // a block written in part
		"write -P 0xcd 26M 1M",
		"discard 4M 4M",  // a whole object with data: gone
		"discard 13M 2M") // part of one: zeros inside it
	rbd("resize", "--size", "36M", img)
	qemuIO("write -P 0xef 33M 512K")
	rbd("snap", "create", img+"@s3")
	rbd("export-diff", "--from-snap", "s2", img+"@s3", file("s3.diff"))
	var st volclient.DiffTransfer
	out := e.Must("vlmc", "import-diff", "--json", file("s3.diff"), "v")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.From != "s2" || st.To != "s3" || !st.Resized || st.Writes == 0 || st.Zeros == 0 {
		t.Fatalf("vlmc import-diff of rbd's diff (data and zero records wanted): %v %+v", err, st)
	}
	t.Logf("rbd export-diff --from-snap s2: %d data records (%d bytes), %d zero records (%d bytes)", st.Writes, st.DataBytes, st.Zeros, st.ZeroBytes)
	same("s3", "s3")
	same("s3", "v")

	// And a full diff of rbd's into a new volume of ours.
	rbd("snap", "create", img+"@s4")
	rbd("export-diff", img+"@s4", file("s4.diff"))
	e.Must("vlmc", "create", "w", "--size", "1M")
	e.Must("vlmc", "import-diff", file("s4.diff"), "w")
	same("s4", "s4")
	same("s4", "w")
}
