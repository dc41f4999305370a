package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/mapdev"
)

// needMapping skips where FUSE or loop devices are unavailable and fails
// where a tool the tests use is missing.
func needMapping(t *testing.T) {
	t.Helper()
	if err := mapdev.Available(); err != nil {
		t.Skipf("cannot map volumes here: %v", err)
	}
	testutil.RequireBinaries(t, "mkfs.ext4", "e2fsck", "mount", "umount", "losetup", "blockdev", "dd")
}

// startMapping starts an installation and makes sure that whatever the
// test maps or mounts is gone at its end, even if it fails half-way:
// this cleanup runs before clitest's `archipelago stop -f`.
func startMapping(t *testing.T) *e2etest.Env {
	t.Helper()
	needMapping(t)
	e := e2etest.New(t, "host-a", "")
	e.Start()
	t.Cleanup(func() {
		// Filesystems the test mounted from its devices; not the map
		// daemons' own FUSE mounts (unmap takes them down; a lazy
		// unmount of one under a busy device left the device and the
		// daemon behind).
		for _, mp := range mountsBelow(e.Dir) {
			if strings.HasPrefix(mp, e.Cfg.MountDir()+"/") {
				continue
			}
			if exec.Command("umount", mp).Run() != nil {
				exec.Command("umount", "-l", mp).Run()
			}
		}
		reg := mapdev.NewRegistry(e.Cfg)
		states, _ := reg.List()
		for _, s := range states {
			if out, err := e.Run("vlmc", "unmap", strconv.Itoa(s.ID)); err != nil {
				t.Logf("cleanup: vlmc unmap %d: %v\n%s", s.ID, err, out)
			}
		}
		// Whatever unmap could not do.
		states, _ = reg.List()
		for _, s := range states {
			if mapdev.Backing(s.Device) == s.File {
				exec.Command("losetup", "-d", s.Device).Run()
			}
			if reg.Alive(s.ID) {
				syscall.Kill(s.PID, syscall.SIGKILL)
			}
			syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH)
			reg.Remove(s.ID)
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(e.Cfg.LogDir, "map-*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, b)
			}
		}
	})
	return e
}

// mountsBelow lists the mountpoints below dir, deepest first.
func mountsBelow(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append([]string{f[4]}, out...)
		}
	}
	return out
}

var loopDev = regexp.MustCompile(`^/dev/loop[0-9]+$`)

// mapVolume maps a volume and checks what map printed.
func mapVolume(t *testing.T, e *e2etest.Env, name string) string {
	t.Helper()
	dev := e.Must("vlmc", "map", name)
	if !loopDev.MatchString(dev) {
		t.Fatalf("vlmc map %s printed %q, want one line /dev/loopN", name, dev)
	}
	return dev
}

// mountDev mounts an ext4 device on a fresh directory.
func mountDev(t *testing.T, e *e2etest.Env, dev string, opts ...string) string {
	t.Helper()
	mp, err := os.MkdirTemp(e.Dir, "mnt-")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mount", append(append([]string{"-t", "ext4"}, opts...), dev, mp)...)
	return mp
}

// writeFiles writes random files (a few MiB in all) and returns their
// sha256 sums by name.
func writeFiles(t *testing.T, dir string, seed uint64) map[string]string {
	t.Helper()
	r := rand.NewChaCha8([32]byte{byte(seed)})
	sums := map[string]string{}
	os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755)
	for i, size := range []int{1, 4096, 100_000, 1 << 20, 3<<20 + 12345, 517 << 10} {
		name := filepath.Join("sub", strconv.Itoa(i))
		if i%2 == 0 {
			name = filepath.Join("sub", "deeper", strconv.Itoa(i))
		}
		b := make([]byte, size)
		r.Read(b)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		sums[name] = hex.EncodeToString(sum[:])
	}
	return sums
}

func checkFiles(t *testing.T, dir string, sums map[string]string) {
	t.Helper()
	for name, want := range sums {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: sha256 %s, want %s", name, got, want)
		}
	}
}

// TestVlmcMapExt4 is the operator's round trip: map, mkfs.ext4, mount,
// write files, unmap, restart everything, map again, e2fsck clean, the
// files intact.
func TestVlmcMapExt4(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "disk01", "--size", "256M")
	dev := mapVolume(t, e, "disk01")
	if out := e.Must("vlmc", "showmapped"); !regexp.MustCompile(`(?m)^0\s+disk01\s+` + dev + `\s+[0-9]+\s+rw\s+mapped$`).MatchString(out) {
		t.Errorf("showmapped while mapped:\n%s", out)
	}
	if size := strings.TrimSpace(testutil.Run(t, "blockdev", "--getsize64", dev)); size != strconv.Itoa(256<<20) {
		t.Errorf("%s is %s bytes, want 256 MiB", dev, size)
	}
	if out, err := e.Run("archipelago", "stop"); err == nil || !strings.Contains(out, "mapped") {
		t.Errorf("archipelago stop with a mapped volume: %v\n%s", err, out)
	}
	testutil.Run(t, "mkfs.ext4", "-q", dev)
	mp := mountDev(t, e, dev)
	sums := writeFiles(t, mp, 1)
	testutil.Run(t, "umount", mp)
	e.Must("vlmc", "unmap", dev)
	if out := e.Must("vlmc", "showmapped"); out != "no volumes mapped" {
		t.Errorf("showmapped after unmap:\n%s", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.Cfg.RunDir, "mapped")); len(ents) != 0 {
		t.Errorf("RUN_DIR/mapped holds %d entries after unmap", len(ents))
	}
	if b := mapdev.Backing(dev); strings.HasPrefix(b, e.Cfg.RunDir) {
		t.Errorf("%s is still attached to %s", dev, b)
	}

	e.Must("archipelago", "restart")
	dev = mapVolume(t, e, "disk01")
	if out, err := exec.Command("e2fsck", "-fn", dev).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", dev, err, out)
	}
	mp = mountDev(t, e, dev)
	checkFiles(t, mp, sums)
	testutil.Run(t, "umount", mp)
	e.Must("vlmc", "unmap", "disk01") // by volume name
	if out := e.Must("vlmc", "showmapped"); out != "no volumes mapped" {
		t.Errorf("showmapped after unmap:\n%s", out)
	}
	e.Must("archipelago", "stop")
}

// TestVlmcMapErrors checks that every failure names the volume or device
// and says why.
func TestVlmcMapErrors(t *testing.T) {
	needMapping(t)
	{
		e := e2etest.New(t, "host-a", "") // nothing started
		out, err := e.Run("vlmc", "map", "disk01")
		if err == nil || !strings.Contains(out, "archipelago start") {
			t.Errorf("map with nothing running: %v\n%s", err, out)
		}
	}
	e := startMapping(t)
	fail := func(want string, args ...string) {
		t.Helper()
		out, err := e.Run("vlmc", args...)
		if err == nil || !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("vlmc %s: %v, want one line with %q:\n%s", strings.Join(args, " "), err, want, out)
		}
	}
	fail(`volume "nosuchvol": not found`, "map", "nosuchvol")
	fail("device /dev/loop99 is not mapped", "unmap", "/dev/loop99")
	fail("no mapping with id 7", "unmap", "7")
	fail(`volume "disk01" is not mapped`, "unmap", "disk01")
	if out := e.Must("vlmc", "showmapped"); out != "no volumes mapped" {
		t.Errorf("showmapped with nothing mapped: %q", out)
	}
	if out := e.Must("vlmc", "showmapped", "--json"); out != "[]" {
		t.Errorf("showmapped --json with nothing mapped: %q", out)
	}

	e.Must("vlmc", "create", "disk01", "--size", "64M")
	dev := mapVolume(t, e, "disk01")
	fail(`volume "disk01" is already mapped at `+dev, "map", "disk01")
	testutil.Run(t, "mkfs.ext4", "-q", dev)
	mp := mountDev(t, e, dev)
	fail("device "+dev+` (volume "disk01") is busy`, "unmap", dev)
	testutil.Run(t, "umount", mp)
	e.Must("vlmc", "unmap", dev)

	// A map daemon that dies: shown as dead; unmap cleans up after it.
	dev = mapVolume(t, e, "disk01")
	reg := mapdev.NewRegistry(e.Cfg)
	states, err := reg.List()
	if err != nil || len(states) != 1 {
		t.Fatalf("records: %v %v", states, err)
	}
	syscall.Kill(states[0].PID, syscall.SIGKILL)
	testutil.WaitFor(t, 10*time.Second, "the killed map daemon to count as dead", func() bool { return !reg.Alive(states[0].ID) })
	if out := e.Must("vlmc", "showmapped"); !regexp.MustCompile(`(?m)^0\s+disk01\s+` + dev + `\s+[0-9]+\s+rw\s+dead$`).MatchString(out) {
		t.Errorf("showmapped with a dead daemon:\n%s", out)
	}
	e.Must("vlmc", "unmap", dev)
	if mapdev.Backing(dev) == states[0].File {
		t.Errorf("%s still attached after unmapping a dead mapping", dev)
	}
	for _, mp := range mountsBelow(e.Cfg.RunDir) {
		t.Errorf("%s still mounted", mp)
	}
	// And it maps again.
	dev = mapVolume(t, e, "disk01")
	e.Must("vlmc", "unmap", dev)

	// A daemon that fails: map says why, on one line, and leaves nothing.
	block := filepath.Join(e.Cfg.RunDir, "mnt", "0")
	if err := os.WriteFile(block, nil, 0o644); err != nil { // not a directory: no mountpoint
		t.Fatal(err)
	}
	fail(`volume "disk01": the map daemon failed`, "map", "disk01")
	if b, _ := os.ReadFile(filepath.Join(e.Cfg.LogDir, "map-0.log")); !bytes.Contains(b, []byte("not a directory")) {
		t.Errorf("the daemon's log does not say why:\n%s", b)
	}
	if out := e.Must("vlmc", "showmapped"); out != "no volumes mapped" {
		t.Errorf("showmapped after a failed map:\n%s", out)
	}
	os.Remove(block)
}

// TestVlmcMapSnapshotReadOnly maps a snapshot: read-only, with the
// volume's data as it was.
func TestVlmcMapSnapshotReadOnly(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "disk01", "--size", "64M")
	dev := mapVolume(t, e, "disk01")
	pattern := bytes.Repeat([]byte("archipelago!"), 1<<20/12+1)[:1<<20]
	src := filepath.Join(e.Dir, "pattern")
	os.WriteFile(src, pattern, 0o644)
	testutil.Run(t, "dd", "if="+src, "of="+dev, "bs=1M", "seek=3", "oflag=direct", "conv=fsync", "status=none")
	e.Must("vlmc", "unmap", dev)
	e.Must("vlmc", "snapshot", "disk01", "disk01-snap")

	dev = mapVolume(t, e, "disk01-snap")
	if out := e.Must("vlmc", "showmapped"); !regexp.MustCompile(`(?m)^0\s+disk01-snap\s+` + dev + `\s+[0-9]+\s+ro\s+mapped$`).MatchString(out) {
		t.Errorf("showmapped of a snapshot:\n%s", out)
	}
	if ro := strings.TrimSpace(testutil.Run(t, "blockdev", "--getro", dev)); ro != "1" {
		t.Errorf("blockdev --getro %s: %s, want 1", dev, ro)
	}
	if out, err := exec.Command("dd", "if="+src, "of="+dev, "bs=1M", "count=1", "oflag=direct", "status=none").CombinedOutput(); err == nil {
		t.Errorf("a write to the snapshot's device succeeded: %s", out)
	}
	got := filepath.Join(e.Dir, "got")
	testutil.Run(t, "dd", "if="+dev, "of="+got, "bs=1M", "skip=3", "count=1", "iflag=direct", "status=none")
	if b, _ := os.ReadFile(got); !bytes.Equal(b, pattern) {
		t.Error("the snapshot's device does not read what was written before the snapshot")
	}
	e.Must("vlmc", "unmap", dev)
}

// TestVlmcMapSurvivesForcedRestart stops every peer under a mounted
// device (archipelago stop -f) and starts them again: the map daemon
// joins the new segment and the filesystem carries on.
func TestVlmcMapSurvivesForcedRestart(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "disk01", "--size", "128M")
	dev := mapVolume(t, e, "disk01")
	testutil.Run(t, "mkfs.ext4", "-q", dev)
	mp := mountDev(t, e, dev)
	sums := writeFiles(t, mp, 2)
	testutil.Run(t, "sync", "-f", mp)
	if out, err := e.Run("archipelago", "stop"); err == nil || !strings.Contains(out, "1 volume(s) mapped") {
		t.Errorf("archipelago stop with a mapped volume: %v\n%s", err, out)
	}
	e.Must("archipelago", "stop", "-f")
	e.Must("archipelago", "start")
	// Remounting reads everything from the volume again.
	testutil.Run(t, "umount", mp)
	mp = mountDev(t, e, dev)
	checkFiles(t, mp, sums)
	more := writeFiles(t, filepath.Join(mp, "sub", "deeper"), 3)
	testutil.Run(t, "umount", mp)
	if out, err := exec.Command("e2fsck", "-fn", dev).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", dev, err, out)
	}
	mp = mountDev(t, e, dev, "-o", "ro")
	checkFiles(t, filepath.Join(mp, "sub", "deeper"), more)
	testutil.Run(t, "umount", mp)

	// One peer restarted under the mounted device (hosted: its process,
	// with every role in it): the same segment, the requests wait for
	// vlmcd to come back.
	restartVlmcd := append([]string{"restart", "-f"}, e.SameProcess("vlmcd")...)
	mp = mountDev(t, e, dev)
	e.Must("archipelago", restartVlmcd...)
	checkFiles(t, mp, sums)
	third := writeFiles(t, mp, 4)
	testutil.Run(t, "sync", "-f", mp)
	e.Must("archipelago", restartVlmcd...)
	testutil.Run(t, "umount", mp)
	mp = mountDev(t, e, dev, "-o", "ro")
	checkFiles(t, mp, third)
	testutil.Run(t, "umount", mp)
	e.Must("vlmc", "unmap", dev)
	b, _ := os.ReadFile(filepath.Join(e.Cfg.LogDir, "map-0.log"))
	if !strings.Contains(string(b), "joined the segment again") {
		t.Errorf("the map daemon did not report joining the new segment:\n%s", b)
	}
}
