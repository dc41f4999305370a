package e2e_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/mapdev"
)

const gib = 1 << 30

// directBuf returns n bytes aligned for O_DIRECT.
func directBuf(n int) []byte {
	b := make([]byte, n+4096)
	a := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if a != 0 {
		a = 4096 - a
	}
	return b[a : a+n]
}

// devIO reads and writes a device with O_DIRECT: what the volume holds,
// not a page cache.
type devIO struct {
	t *testing.T
	f *os.File
}

func openDirect(t *testing.T, dev string) devIO {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return devIO{t, f}
}

func (d devIO) write(p []byte, off int64) {
	d.t.Helper()
	b := directBuf(len(p))
	copy(b, p)
	if _, err := d.f.WriteAt(b, off); err != nil {
		d.t.Fatalf("write %d bytes at %d of %s: %v", len(p), off, d.f.Name(), err)
	}
}

func (d devIO) read(n int, off int64) []byte {
	d.t.Helper()
	b := directBuf(n)
	if _, err := d.f.ReadAt(b, off); err != nil {
		d.t.Fatalf("read %d bytes at %d of %s: %v", n, off, d.f.Name(), err)
	}
	return b
}

// devSize is what `blockdev --getsize64` says.
func devSize(t *testing.T, dev string) int64 {
	t.Helper()
	out := testutil.Run(t, "blockdev", "--getsize64", dev)
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("blockdev --getsize64 %s printed %q", dev, out)
	}
	return n
}

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), 'r', 'e', 's'})
	r.Read(b)
	return b
}

// TestResizeMapped grows a mapped volume twice with vlmc resize: the
// device shows each new size as soon as resize returns, keeps its data,
// and its new tail reads zeros and takes writes. Shrinking it while
// mapped is refused and changes nothing.
func TestResizeMapped(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "grow1", "--size", "1G")
	dev := mapVolume(t, e, "grow1")
	if n := devSize(t, dev); n != gib {
		t.Fatalf("%s: %d bytes before the resize, want %d", dev, n, gib)
	}
	d := openDirect(t, dev)
	head, end := pattern(1, 1<<20), pattern(2, 1<<20)
	d.write(head, 0)
	d.write(end, gib-1<<20)

	for i, size := range []int64{2 * gib, 3 * gib} {
		start := time.Now()
		e.Must("vlmc", "resize", "grow1", "--size", strconv.FormatInt(size>>20, 10))
		t.Logf("vlmc resize to %d GiB took %v", size/gib, time.Since(start))
		if n := devSize(t, dev); n != size {
			t.Fatalf("right after vlmc resize to %d: blockdev --getsize64 %s = %d", size, dev, n)
		}
		if !bytes.Equal(d.read(len(head), 0), head) || !bytes.Equal(d.read(len(end), gib-1<<20), end) {
			t.Fatalf("after the resize to %d: the data written before changed", size)
		}
		tailAt := size - 1<<20
		if !bytes.Equal(d.read(1<<20, tailAt), make([]byte, 1<<20)) {
			t.Fatalf("after the resize to %d: the new tail does not read as zeros", size)
		}
		tail := pattern(uint64(10+i), 1<<20)
		d.write(tail, tailAt)
		if !bytes.Equal(d.read(len(tail), tailAt), tail) {
			t.Fatalf("after the resize to %d: the new tail does not read back what was written", size)
		}
	}
	// Shrinking a mapped volume is refused: the device and the volume
	// keep their size and data.
	out, err := e.Run("vlmc", "resize", "grow1", "--size", "1G", "--force")
	if err == nil {
		t.Fatalf("vlmc resize --force to 1G of a mapped volume succeeded:\n%s", out)
	}
	if !strings.Contains(out, `volume "grow1" is mapped at `+dev) || !strings.Contains(out, "unmap it first") {
		t.Errorf("the refusal does not name the volume and its device:\n%s", out)
	}
	if n := devSize(t, dev); n != 3*gib {
		t.Errorf("after the refused shrink: %s shows %d bytes", dev, n)
	}
	if info := e.Must("vlmc", "info", "grow1"); !strings.Contains(info, "("+strconv.Itoa(3*gib)+" bytes)") {
		t.Errorf("after the refused shrink: vlmc info grow1:\n%s", info)
	}
	if !bytes.Equal(d.read(len(end), gib-1<<20), end) || !bytes.Equal(d.read(1<<20, 3*gib-1<<20), pattern(11, 1<<20)) {
		t.Error("after the refused shrink: the data changed")
	}
	// Growing with --force is a grow: allowed.
	e.Must("vlmc", "resize", "grow1", "--size", "3200", "--force")
	if n := devSize(t, dev); n != 3200<<20 {
		t.Errorf("after vlmc resize --force to 3200 MiB: %s shows %d bytes", dev, n)
	}
	// A grown mapping unmaps as any other, and maps again at its size.
	d.f.Close()
	e.Must("vlmc", "unmap", dev)
	dev = mapVolume(t, e, "grow1")
	if n := devSize(t, dev); n != 3200<<20 {
		t.Errorf("mapped again: %s shows %d bytes, want %d", dev, n, 3200<<20)
	}
	d = openDirect(t, dev)
	if !bytes.Equal(d.read(1<<20, 3*gib-1<<20), pattern(11, 1<<20)) {
		t.Error("mapped again: the tail written after the grow is not there")
	}
	d.f.Close()
	e.Must("vlmc", "unmap", dev)
}

// TestResizeMappedOtherHost grows, from host B, a volume that host A maps:
// A's map daemon sees it when it polls (mapdev.GrowPoll) and its device
// follows; the new tail takes writes on A.
func TestResizeMappedOtherHost(t *testing.T) {
	needMapping(t)
	a, b := e2etest.TwoHosts(t, e2etest.Options{})
	a.Start()
	b.Start()
	t.Cleanup(func() {
		reg := mapdev.NewRegistry(a.Cfg)
		states, _ := reg.List()
		for _, s := range states {
			if out, err := a.Run("vlmc", "unmap", strconv.Itoa(s.ID)); err != nil {
				t.Logf("cleanup: vlmc unmap %d: %v\n%s", s.ID, err, out)
			}
		}
	})
	a.Must("vlmc", "create", "shared", "--size", "1G")
	dev := mapVolume(t, a, "shared")
	d := openDirect(t, dev)
	end := d.read(1<<20, gib-1<<20) // reads take no lock: B may resize
	b.Must("vlmc", "resize", "shared", "--size", "2G")
	testutil.WaitFor(t, 4*mapdev.GrowPoll, dev+" on host A to show 2 GiB", func() bool { return devSize(t, dev) == 2*gib })
	tail := pattern(3, 1<<20)
	d.write(tail, 2*gib-1<<20)
	if !bytes.Equal(d.read(len(tail), 2*gib-1<<20), tail) || !bytes.Equal(d.read(len(end), gib-1<<20), end) {
		t.Error("after the grow from host B: the device does not hold what was written")
	}
	d.f.Close()
	a.Must("vlmc", "unmap", dev)
}

// TestUnmapAfterLazyUmount: the mapping's FUSE filesystem unmounted
// lazily from outside (umount -l, as a careless cleanup does) leaves the
// loop device attached to a file without a path; vlmc unmap still
// detaches it (the daemon finds its device by inode) and ends the daemon.
func TestUnmapAfterLazyUmount(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "lazy", "--size", "64M")
	dev := mapVolume(t, e, "lazy")
	st, err := mapdev.NewRegistry(e.Cfg).List()
	if err != nil || len(st) != 1 {
		t.Fatalf("mappings: %v, %v", st, err)
	}
	testutil.Run(t, "umount", "-l", st[0].Mountpoint)
	e.Must("vlmc", "unmap", dev)
	testutil.WaitFor(t, 10*time.Second, dev+" to be detached", func() bool { return mapdev.Backing(dev) == "" })
	if m, _ := mapdev.List(e.Cfg); len(m) != 0 {
		t.Errorf("mappings left after unmap: %+v", m)
	}
}

// A process that holds a mapped device open without O_EXCL (a VM's QEMU,
// dd) makes vlmc unmap fail at once naming it; the mapping stays whole
// and unmaps once the process lets go. Before, unmap detached the device
// lazily, waited a minute for the map daemon and failed, leaving both.
func TestUnmapRefusesOpenDevice(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "held", "--size", "64M")
	dev := mapVolume(t, e, "held")
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.Run("vlmc", "unmap", dev)
	if err == nil || !strings.Contains(out, "is open by pid "+strconv.Itoa(os.Getpid())) {
		f.Close()
		t.Fatalf("unmap of %s held open by this process: err %v, output %q", dev, err, out)
	}
	if got := mapdev.Backing(dev); got == "" {
		t.Fatalf("%s lost its backing file after a refused unmap", dev)
	}
	f.Close()
	e.Must("vlmc", "unmap", dev)
	if out := e.Must("vlmc", "showmapped"); strings.Contains(out, "held") {
		t.Fatalf("still mapped after unmap:\n%s", out)
	}
}
