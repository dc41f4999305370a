package e2e_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/mapdev"
	"github.com/archipelago-go/archipelago/volclient"
)

// extActions are the scripts of Ganeti's ExtStorage interface.
var extActions = []string{"create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close"}

// extProvider is a Ganeti provider directory of one host: links named
// after the actions to the built archipelago-extstorage, as the package
// installs them.
type extProvider struct {
	t   *testing.T
	dir string
	e   *e2etest.Env
}

func newExtProvider(t *testing.T, e *e2etest.Env) *extProvider {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "archipelago")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testbin.Path(t, "archipelago-extstorage")
	for _, a := range extActions {
		if err := os.Symlink(bin, filepath.Join(dir, a)); err != nil {
			t.Fatal(err)
		}
	}
	return &extProvider{t: t, dir: dir, e: e}
}

// run runs action as Ganeti's node daemon does: no arguments, in the
// provider directory, umask 077, stdin closed, an environment of PATH, LC_ALL=C, the
// host's configuration, EXTP_PROVIDER and vars. It returns stdout and
// stderr apart. A program that leaves a process holding its stdout fails
// here (Ganeti would wait for it: it reads stdout until it closes).
func (p *extProvider) run(action string, vars ...string) (stdout, stderr string, err error) {
	p.t.Helper()
	// Ganeti's scripts run with umask 077 (so do the map daemons attach
	// starts).
	cmd := exec.Command("/bin/sh", "-c", `umask 077 && exec "$0"`, filepath.Join(p.dir, action))
	cmd.Dir = p.dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "ARCHIPELAGO_CONFIG=" + p.e.Config, "EXTP_PROVIDER=archipelago"}, vars...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 10 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		err = fmt.Errorf("%s timed out: %v", action, <-done)
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		p.t.Fatalf("%s %v exited but its stdout stayed open (a process it started inherited it): Ganeti would wait for that process", action, vars)
	}
	return out.String(), errOut.String(), err
}

// must runs action, fails the test if it fails, and returns its stdout.
func (p *extProvider) must(action string, vars ...string) string {
	p.t.Helper()
	out, errOut, err := p.run(action, vars...)
	if err != nil {
		p.t.Fatalf("%s %v: %v\nstdout: %s\nstderr: %s", action, vars, err, out, errOut)
	}
	return out
}

// fails runs action, expecting it to fail saying says; it returns stderr.
func (p *extProvider) fails(action string, says string, vars ...string) string {
	p.t.Helper()
	out, errOut, err := p.run(action, vars...)
	if err == nil || !strings.Contains(errOut, says) {
		p.t.Fatalf("%s %v: %v, stderr %q; want a failure saying %q", action, vars, err, errOut, says)
	}
	if action == "attach" && out != "" {
		p.t.Fatalf("a failed attach printed %q on stdout", out)
	}
	return errOut
}

// attach runs attach and checks its answer: line 1 exactly a block
// device, line 2 a kvm: line with the volume's NBD URI, nothing else. It
// returns the device and the URI.
func (p *extProvider) attach(vol string) (dev, uri string) {
	p.t.Helper()
	out := p.must("attach", "VOL_NAME="+vol)
	lines := strings.Split(out, "\n")
	if len(lines) != 3 || lines[2] != "" || !loopDev.MatchString(lines[0]) || !strings.HasPrefix(lines[1], "kvm:") {
		p.t.Fatalf("attach %s printed %q, want /dev/loopN, a kvm: line and nothing else", vol, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(lines[0], &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		p.t.Fatalf("attach %s: %s is not a block device (%v, mode %o)", vol, lines[0], err, st.Mode)
	}
	uri = strings.TrimPrefix(lines[1], "kvm:")
	if want := p.e.URI(vol); uri != want {
		p.t.Fatalf("attach %s: kvm URI %q, want %q", vol, uri, want)
	}
	return lines[0], uri
}

// extInfo is vlmc info --json of vol.
func extInfo(t *testing.T, e *e2etest.Env, vol string) volclient.Info {
	t.Helper()
	var vi volclient.Info
	if err := json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", vol)), &vi); err != nil {
		t.Fatal(err)
	}
	return vi
}

// extMapped lists the devices that map vol on host e.
func extMapped(t *testing.T, e *e2etest.Env, vol string) []string {
	t.Helper()
	ms, err := mapdev.List(e.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, m := range ms {
		if m.Volume == vol {
			devs = append(devs, m.Device+" "+m.Status)
		}
	}
	return devs
}

// extCleanMappings unmaps, at the test's end and before its installations
// stop, whatever the test left mapped on hosts es.
func extCleanMappings(t *testing.T, es ...*e2etest.Env) {
	t.Cleanup(func() {
		for _, e := range es {
			reg := mapdev.NewRegistry(e.Cfg)
			states, _ := reg.List()
			for _, s := range states {
				if out, err := e.Run("vlmc", "unmap", strconv.Itoa(s.ID)); err != nil {
					t.Logf("cleanup: vlmc unmap %d: %v\n%s", s.ID, err, out)
					if reg.Alive(s.ID) {
						syscall.Kill(s.PID, syscall.SIGKILL)
					}
					exec.Command("losetup", "-d", s.Device).Run()
					syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH)
					reg.Remove(s.ID)
				}
			}
			if t.Failed() {
				logs, _ := filepath.Glob(filepath.Join(e.Cfg.LogDir, "map-*.log"))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", l, b)
				}
			}
		}
	})
}

// extBuf is n bytes at a 4 KiB boundary, for O_DIRECT (Go's heap does
// not move what it allocated).
func extBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off%4096 : off%4096+n]
}

// extOpen opens a device for O_DIRECT I/O, as QEMU does with cache=none.
func extOpen(t *testing.T, dev string) *os.File {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// extWrite writes n bytes of value v at off of dev, with O_DIRECT.
func extWrite(t *testing.T, dev string, off int64, n int, v byte) {
	t.Helper()
	f := extOpen(t, dev)
	defer f.Close()
	b := extBuf(n)
	for i := range b {
		b[i] = v
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("write %d bytes at %d of %s: %v", n, off, dev, err)
	}
}

// extCheck reads n bytes at off of dev with O_DIRECT and checks that
// each is v.
func extCheck(t *testing.T, f *os.File, off int64, n int, v byte) {
	t.Helper()
	b := extBuf(n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %d bytes at %d of %s: %v", n, off, f.Name(), err)
	}
	for i, c := range b {
		if c != v {
			t.Fatalf("%s at %d: byte %#x, want %#x", f.Name(), off+int64(i), c, v)
		}
	}
}

// TestExtStorageVolumeLife runs the provider as Ganeti runs it through a
// disk's life on one host: verify, create, setinfo, attach (twice: the
// same device, and a kvm: URI qemu-io reads), I/O through the device,
// grow with the device mapped, snapshot, creates from origin=<snapshot>
// and origin=<volume> that show the data, open/close, detach (twice),
// remove (twice), and the failures Ganeti must see.
func TestExtStorageVolumeLife(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	e := startMapping(t)
	p := newExtProvider(t, e)
	const vol = "0f1e2d3c-4b5a.ext.disk0"
	V := "VOL_NAME=" + vol

	if _, errOut, err := p.run("verify"); err != nil || !strings.Contains(errOut, "vlmcd answers") {
		t.Fatalf("verify: %v\n%s", err, errOut)
	}
	p.fails("attach", "not found", V) // Ganeti's existence test
	p.must("create", V, "VOL_SIZE=64", "VOL_CNAME=data", "VOL_UUID=4b5a")
	if vi := extInfo(t, e, vol); vi.Size != 64<<20 || vi.ReadOnly {
		t.Fatalf("created %+v, want a 64 MiB volume", vi)
	}
	p.fails("create", "already exists", V, "VOL_SIZE=64")
	if _, errOut, err := p.run("setinfo", V, "VOL_METADATA=originstname+vm1.example.org"); err != nil || !strings.Contains(errOut, "originstname+vm1.example.org") {
		t.Fatalf("setinfo: %v\n%s", err, errOut)
	}

	start := time.Now()
	dev, uri := p.attach(vol)
	firstAttach := time.Since(start)
	start = time.Now()
	if again, _ := p.attach(vol); again != dev {
		t.Fatalf("second attach gave %s, first %s", again, dev)
	}
	t.Logf("attach: %v mapping, %v when mapped", firstAttach.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if devs := extMapped(t, e, vol); len(devs) != 1 {
		t.Fatalf("mapped %v after two attaches, want once", devs)
	}
	// The map daemon outlives attach, whose stdout closed (p.run checks).
	extWrite(t, dev, 1<<20, 1<<20, 0x5a)
	if err := testutil.QemuIOReadOnly(t, uri, "read -P 0x5a 1M 1M", "read -P 0 0 1M"); err != nil {
		t.Fatalf("qemu-io on attach's kvm: URI: %v", err)
	}

	// grow with the device mapped: it shows the new size.
	p.must("grow", V, "VOL_SIZE=64", "VOL_NEW_SIZE=96")
	if vi := extInfo(t, e, vol); vi.Size != 96<<20 {
		t.Fatalf("grown to %d bytes, want 96 MiB", vi.Size)
	}
	if n, err := mapdev.DeviceSize(dev); err != nil || n != 96<<20 {
		t.Fatalf("%s shows %d bytes after grow (%v), want 96 MiB", dev, n, err)
	}
	p.fails("grow", "shrink", V, "VOL_SIZE=96", "VOL_NEW_SIZE=32")

	// snapshot, then clones of it and of the volume itself.
	p.must("snapshot", V, "VOL_SNAPSHOT_NAME="+vol+".snap", "VOL_SNAPSHOT_SIZE=96")
	if vi := extInfo(t, e, vol+".snap"); !vi.ReadOnly || vi.Size != 96<<20 {
		t.Fatalf("snapshot: %+v", vi)
	}
	extWrite(t, dev, 1<<20, 4096, 0x77) // after the snapshot: not in it
	const clone = "0f1e2d3c-4b5a.ext.disk1"
	p.fails("create", "smaller than its origin", "VOL_NAME="+clone, "VOL_SIZE=95", "EXTP_ORIGIN="+vol+".snap")
	p.fails("create", "not found", "VOL_NAME="+clone, "VOL_SIZE=128", "EXTP_ORIGIN=no-such-image")
	p.must("create", "VOL_NAME="+clone, "VOL_SIZE=128", "EXTP_ORIGIN="+vol+".snap")
	if vi := extInfo(t, e, clone); vi.Size != 128<<20 || vi.Parent != vol+".snap" {
		t.Fatalf("clone: %+v", vi)
	}
	// origin stays in the disk's parameters for its life: attach ignores it.
	out := p.must("attach", "VOL_NAME="+clone, "EXTP_ORIGIN="+vol+".snap")
	cdev := strings.SplitN(out, "\n", 2)[0]
	cf := extOpen(t, cdev)
	extCheck(t, cf, 1<<20, 1<<20, 0x5a)
	cf.Close()
	p.must("detach", "VOL_NAME="+clone)

	const clone2 = "0f1e2d3c-4b5a.ext.disk2"
	_, errOut, err := p.run("create", "VOL_NAME="+clone2, "VOL_SIZE=96", "EXTP_ORIGIN="+vol)
	if err != nil || !strings.Contains(errOut, clone2+".origin") {
		t.Fatalf("create from a volume: %v; stderr %q does not name the snapshot it took", err, errOut)
	}
	if vi := extInfo(t, e, clone2); vi.Parent != clone2+".origin" {
		t.Fatalf("clone of a volume: %+v", vi)
	}
	if err := testutil.QemuIOReadOnly(t, e.URI(clone2), "read -P 0x77 1M 4K", "read -P 0x5a 1052672 1020K"); err != nil {
		t.Fatalf("clone of the volume: %v", err)
	}

	// open exclusive takes the lock; close gives it back, unmapping the
	// device that kept it.
	p.must("open", V, "VOL_OPEN_EXCLUSIVE=True")
	if vi := extInfo(t, e, vol); vi.LockOwner != "host-a" {
		t.Fatalf("after an exclusive open the lock is %q's, want host-a's", vi.LockOwner)
	}
	p.must("open", V, "VOL_OPEN_EXCLUSIVE=False")
	p.must("close", V)
	if vi := extInfo(t, e, vol); vi.LockOwner != "" {
		t.Fatalf("after close the lock is %q's, want free", vi.LockOwner)
	}
	p.must("close", V)
	dev, _ = p.attach(vol)

	// A device a process holds open (a VM still running here) is not
	// detached: detach fails at once naming the process.
	// Nor does close unmap it: the lock stays with this host.
	p.must("open", V, "VOL_OPEN_EXCLUSIVE=True")
	held := extOpen(t, dev)
	p.fails("detach", fmt.Sprintf("in use by pid %d", os.Getpid()), V)
	p.fails("close", fmt.Sprintf("in use by pid %d", os.Getpid()), V)
	if vi := extInfo(t, e, vol); vi.LockOwner != "host-a" {
		t.Fatalf("close refused, but the lock is %q's, want host-a's", vi.LockOwner)
	}
	held.Close()
	p.must("close", V)
	if vi := extInfo(t, e, vol); vi.LockOwner != "" {
		t.Fatalf("after close the lock is %q's, want free", vi.LockOwner)
	}

	// detach, twice: nothing printed, nothing left.
	for i := 0; i < 2; i++ {
		if out := p.must("detach", V); out != "" {
			t.Fatalf("detach printed %q", out)
		}
	}
	if devs := extMapped(t, e, vol); len(devs) != 0 {
		t.Fatalf("still mapped after detach: %v", devs)
	}

	// remove unmaps what is still mapped; a second remove finds nothing.
	p.attach(clone2)
	p.must("remove", "VOL_NAME="+clone2)
	if devs := extMapped(t, e, clone2); len(devs) != 0 {
		t.Fatalf("still mapped after remove: %v", devs)
	}
	list := e.Must("vlmc", "list")
	if strings.Contains(list, clone2) {
		t.Fatalf("remove left %s or its origin's snapshot:\n%s", clone2, list)
	}
	if _, errOut, err := p.run("remove", "VOL_NAME="+clone2); err != nil || !strings.Contains(errOut, "removed already") {
		t.Fatalf("second remove: %v\n%s", err, errOut)
	}
	p.must("remove", "VOL_NAME="+clone)
	p.must("remove", V)
	p.must("remove", "VOL_NAME="+vol+".snap")
	if list := e.Must("vlmc", "list"); strings.Contains(list, "0f1e2d3c") {
		t.Fatalf("volumes left:\n%s", list)
	}
}

// TestExtStorageMigration calls the provider on two hosts in the order of
// Ganeti's live migration (lib/cmdlib/instance_migration.py) while a
// writer on the source plays the VM: close on the target; open shared on
// both; migrate; close on the source; open exclusive on the target;
// detach on the source. Before every open, close and detach Ganeti runs
// attach on that host (its FindDevice). The VM on the source writes
// through the device and through the NBD URI; the target's write, issued
// at the switch-over, waits until the source closes; every write the
// source saw acknowledged is on the volume afterwards.
func TestExtStorageMigration(t *testing.T) {
	needMapping(t)
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, e2etest.Options{})
	a.Start()
	b.Start()
	extCleanMappings(t, a, b)
	pa, pb := newExtProvider(t, a), newExtProvider(t, b)
	const vol = "9a8b7c6d.ext.disk0"
	V := "VOL_NAME=" + vol

	// The instance runs on A: created, attached, opened exclusive. Its
	// VM has two ways to the volume: the device (kernelspace access), and
	// the kvm: NBD URI (userspace access), here a qemu-io.
	pa.must("create", V, "VOL_SIZE=64")
	devA, uriA := pa.attach(vol)
	pa.must("open", V, "VOL_OPEN_EXCLUSIVE=True")
	qa := testutil.StartQemuSession(t, uriA)

	// The VM on A writes 64 KiB blocks, each its own value, until the
	// switch-over; acked counts those whose write returned.
	const blk = 64 << 10
	const region = 32 << 20
	value := func(i int) byte { return byte(i%251 + 1) }
	fa := extOpen(t, devA)
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr atomic.Pointer[error]
	stopped := false
	stopWriter := func() {
		if !stopped {
			stopped = true
			close(stop)
		}
		wg.Wait()
		fa.Close() // the VM's QEMU exits
	}
	t.Cleanup(stopWriter)
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := extBuf(blk)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for j := range buf {
				buf[j] = value(i)
			}
			if _, err := fa.WriteAt(buf, int64(i*blk%region)); err != nil {
				werr.Store(&err)
				return
			}
			acked.Store(int64(i + 1))
		}
	}()
	waitAcked := func(n int64) {
		testutil.WaitFor(t, time.Minute, fmt.Sprintf("%d writes on A", n), func() bool { return acked.Load() >= n || werr.Load() != nil })
	}
	waitAcked(10)

	// A close where the volume is not even mapped finds another host's
	// lock: nothing to release, success.
	pb.must("close", V)
	if vi := extInfo(t, a, vol); vi.LockOwner != "host-a" {
		t.Fatalf("B's close took the lock from A: it is %q's", vi.LockOwner)
	}

	// Ganeti's migration, with the VM writing on A meanwhile.
	pb.attach(vol)
	pb.must("close", V) // the target holds nothing: nothing to release
	pa.attach(vol)
	pa.must("open", V, "VOL_OPEN_EXCLUSIVE=False")
	pb.attach(vol)
	pb.must("open", V, "VOL_OPEN_EXCLUSIVE=False")
	if vi := extInfo(t, a, vol); vi.LockOwner != "host-a" {
		t.Fatalf("during the migration the lock is %q's, want host-a's", vi.LockOwner)
	}
	qa.Must("write -P 0xc1 40M 1M")
	waitAcked(acked.Load() + 10)

	// Switch-over: the VM stops on A (its QEMU exits), resumes on B and
	// writes at once.
	stopWriter()
	qa.Kill() // Ganeti kills the source's QEMU after the switch-over
	if err := werr.Load(); err != nil {
		t.Fatalf("the writer on A: %v", *err)
	}
	n := int(acked.Load())
	devB := strings.SplitN(pb.must("attach", V), "\n", 2)[0]
	bDone := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(devB, os.O_RDWR|syscall.O_DIRECT, 0)
		if err != nil {
			bDone <- err
			return
		}
		defer f.Close()
		buf := extBuf(blk)
		for j := range buf {
			buf[j] = 0xb0
		}
		_, err = f.WriteAt(buf, 48<<20)
		bDone <- err
	}()
	select {
	case err := <-bDone:
		t.Fatalf("B's write did not wait for A to close: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}

	pa.attach(vol)
	pa.must("close", V)
	closed := time.Now()
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("B's waiting write: %v", err)
		}
		t.Logf("B's write went on %v after A's close returned", time.Since(closed).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("B's write still waits 30 s after A's close (lock: %q)", extInfo(t, a, vol).LockOwner)
	}
	pb.attach(vol)
	pb.must("open", V, "VOL_OPEN_EXCLUSIVE=True")
	if vi := extInfo(t, b, vol); vi.LockOwner != "host-b" {
		t.Fatalf("after the target's exclusive open the lock is %q's, want host-b's", vi.LockOwner)
	}
	// Ganeti's blockdev_shutdown on the source: attach, then detach.
	pa.attach(vol)
	pa.must("detach", V)
	if devs := extMapped(t, a, vol); len(devs) != 0 {
		t.Fatalf("A still maps the volume: %v", devs)
	}
	pa.fails("open", "locked by host-b", V, "VOL_OPEN_EXCLUSIVE=True")

	// Every write A saw acknowledged, and B's, through B's device.
	fb := extOpen(t, devB)
	last := map[int64]int{} // offset → the last write there
	for i := 0; i < n; i++ {
		last[int64(i*blk%region)] = i
	}
	for off, i := range last {
		extCheck(t, fb, off, blk, value(i))
	}
	extCheck(t, fb, 40<<20, 1<<20, 0xc1)
	extCheck(t, fb, 48<<20, blk, 0xb0)
	t.Logf("%d writes acknowledged on A (%d blocks), all on the volume after the migration", n, len(last))
	// The VM goes on writing on B.
	extWrite(t, devB, 50<<20, blk, 0xb1)
	extCheck(t, fb, 50<<20, blk, 0xb1)

	fb.Close() // the VM stops on B
	pb.must("detach", V)
	pb.must("remove", V)
}
