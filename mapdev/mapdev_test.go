package mapdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// memDevice is a Device in memory that counts flushes and zeroings.
type memDevice struct {
	mu      sync.Mutex // guards b
	b       []byte
	ro      bool
	flushes atomic.Int32
	zeroed  atomic.Int64 // bytes zeroed through Zero
}

var (
	_ Device = (*memDevice)(nil)
	_ Zeroer = (*memDevice)(nil)
)

func (m *memDevice) Size() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(len(m.b))
}

func (m *memDevice) ReadOnly() bool { return m.ro }

// grow appends n zero bytes.
func (m *memDevice) grow(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.b = append(m.b, make([]byte, n)...)
}

func (m *memDevice) check(off uint64, n int) error {
	if size := m.Size(); off+uint64(n) > size {
		return fmt.Errorf("range [%d,+%d) beyond %d: %w", off, n, size, errs.ErrInvalid)
	}
	return nil
}

func (m *memDevice) ReadAt(_ context.Context, p []byte, off uint64) error {
	if err := m.check(off, len(p)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.b[off:])
	return nil
}

func (m *memDevice) WriteAt(_ context.Context, p []byte, off uint64, _ bool) error {
	if m.ro {
		return errs.ErrReadOnly
	}
	if err := m.check(off, len(p)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.b[off:], p)
	return nil
}

func (m *memDevice) Flush(context.Context) error { m.flushes.Add(1); return nil }

func (m *memDevice) Zero(_ context.Context, off, n uint64) error {
	if err := m.check(off, int(n)); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.b[off : off+n])
	m.zeroed.Add(int64(n))
	return nil
}

func (m *memDevice) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b)
}

// needFUSE skips a test where FUSE cannot be mounted.
func needFUSE(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("no FUSE or loop devices here: %v", err)
	}
}

// mount serves dev at a fresh directory until the test ends.
func mount(t *testing.T, dev Device) *Server {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	s, err := Mount(dir, dev, MountOptions{Name: "disk01"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return s
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := i; j < min(i+8, n); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	return b
}

// alignedBuf returns n bytes aligned for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	a := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if a != 0 {
		a = 4096 - a
	}
	return b[a : a+n]
}

func TestFileAttributes(t *testing.T) {
	dev := &memDevice{b: make([]byte, 3<<20+512)}
	s := mount(t, dev)
	st, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(dev.Size()) || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("stat: size %d mode %v, want %d, regular 0600", st.Size(), st.Mode(), dev.Size())
	}
	ents, err := os.ReadDir(s.Dir())
	if err != nil || len(ents) != 1 || ents[0].Name() != "disk01" {
		t.Errorf("mountpoint holds %v (%v), want the one file disk01", ents, err)
	}
	if err := os.Truncate(s.Path(), 1<<20); err == nil {
		t.Error("truncate to another size succeeded")
	}
	if err := os.Truncate(s.Path(), int64(dev.Size())); err != nil {
		t.Errorf("truncate to its own size: %v", err)
	}
}

// TestConcurrentIO writes random pieces at random offsets from many
// goroutines (disjoint per goroutine, so that the oracle is exact), with
// and without O_DIRECT, and reads everything back.
func TestConcurrentIO(t *testing.T) {
	const size = 8 << 20
	dev := &memDevice{b: make([]byte, size)}
	s := mount(t, dev)
	oracle := make([]byte, size)
	const workers = 8
	stripe := size / workers
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	var omu sync.Mutex
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			flags := os.O_RDWR
			direct := w%2 == 0
			if direct {
				flags |= syscall.O_DIRECT
			}
			f, err := os.OpenFile(s.Path(), flags, 0)
			if err != nil {
				errc <- err
				return
			}
			defer f.Close()
			base := w * stripe
			for range 50 {
				var off, n int
				if direct { // O_DIRECT wants aligned I/O
					n = (1 + r.IntN(64)) * 4096
					off = base + r.IntN((stripe-n)/4096+1)*4096
				} else {
					n = 1 + r.IntN(200<<10)
					off = base + r.IntN(stripe-n+1)
				}
				p := alignedBuf(n)
				copy(p, randomBytes(r, n))
				if _, err := f.WriteAt(p, int64(off)); err != nil {
					errc <- fmt.Errorf("write [%d,+%d) direct=%v: %w", off, n, direct, err)
					return
				}
				omu.Lock()
				copy(oracle[off:], p)
				omu.Unlock()
				q := alignedBuf(n)
				if _, err := f.ReadAt(q, int64(off)); err != nil {
					errc <- fmt.Errorf("read [%d,+%d): %w", off, n, err)
					return
				}
				if !bytes.Equal(p, q) {
					errc <- fmt.Errorf("read back [%d,+%d) differs", off, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if !bytes.Equal(dev.snapshot(), oracle) {
		t.Error("device differs from what was written")
	}
	got, err := os.ReadFile(s.Path())
	if err != nil || !bytes.Equal(got, oracle) {
		t.Errorf("reading the whole file: %v, equal %v", err, bytes.Equal(got, oracle))
	}
}

func TestBoundsSyncAndZero(t *testing.T) {
	dev := &memDevice{b: make([]byte, 1<<20)}
	s := mount(t, dev)
	f, err := os.OpenFile(s.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The file cannot grow: a write across the end is cut short (or
	// fails, as the kernel may split it), one past it fails.
	if n, err := f.WriteAt(bytes.Repeat([]byte{7}, 8192), 1<<20-4096); err == nil || n > 4096 {
		t.Errorf("write across the end: %d, %v; want at most 4096 and an error", n, err)
	}
	if st, _ := f.Stat(); st == nil || st.Size() != 1<<20 {
		t.Errorf("the file grew: %v", st)
	}
	if _, err := f.WriteAt([]byte{1}, 1<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write past the end: %v, want ENOSPC", err)
	}
	if n, err := f.ReadAt(make([]byte, 10), 1<<20); n != 0 {
		t.Errorf("read past the end: %d, %v", n, err)
	}
	before := dev.flushes.Load()
	if err := f.Sync(); err != nil || dev.flushes.Load() != before+1 {
		t.Errorf("fsync: %v, flushes %d -> %d", err, before, dev.flushes.Load())
	}
	// PUNCH_HOLE and ZERO_RANGE reach Zero.
	if _, err := f.WriteAt(bytes.Repeat([]byte{9}, 65536), 0); err != nil {
		t.Fatal(err)
	}
	const punch, keep, zeroRange = 0x02, 0x01, 0x10
	if err := syscall.Fallocate(int(f.Fd()), punch|keep, 4096, 8192); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	if err := syscall.Fallocate(int(f.Fd()), zeroRange|keep, 20000, 100); err != nil {
		t.Fatalf("zero range: %v", err)
	}
	got := dev.snapshot()[:65536]
	for i, c := range got {
		zero := (i >= 4096 && i < 12288) || (i >= 20000 && i < 20100)
		if zero != (c == 0) {
			t.Fatalf("byte %d is %d after zeroing", i, c)
		}
	}
	if dev.zeroed.Load() != 8192+100 {
		t.Errorf("zeroed %d bytes, want %d", dev.zeroed.Load(), 8192+100)
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, 2<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("fallocate growing the file: %v, want ENOSPC", err)
	}
}

func TestReadOnly(t *testing.T) {
	dev := &memDevice{b: bytes.Repeat([]byte{5}, 1<<20), ro: true}
	s := mount(t, dev)
	if _, err := os.OpenFile(s.Path(), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for writing: %v, want EROFS", err)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil || !bytes.Equal(b, dev.b) {
		t.Errorf("read: %v", err)
	}
	if st, _ := os.Stat(s.Path()); st == nil || st.Mode().Perm() != 0o444 {
		t.Errorf("mode of a read-only file: %v", st)
	}
}

// attachLoop attaches a loop device to the mapped file of s, detached
// when the test ends.
func attachLoop(t *testing.T, s *Server) string {
	t.Helper()
	ctx := context.Background()
	loop, err := Attach(ctx, s.Path(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if Backing(loop) == s.Path() {
			Detach(ctx, loop)
		}
	})
	return loop
}

// TestLoopDevice attaches a loop device with direct I/O to the file,
// writes through the device and reads through the file.
func TestLoopDevice(t *testing.T) {
	dev := &memDevice{b: make([]byte, 16<<20)}
	s := mount(t, dev)
	ctx := context.Background()
	loop := attachLoop(t, s)
	if !strings.HasPrefix(loop, "/dev/loop") || Backing(loop) != s.Path() {
		t.Fatalf("attached %q, backing %q", loop, Backing(loop))
	}
	if l := LoopsOf(s.Path()); len(l) != 1 || l[0] != loop {
		t.Errorf("LoopsOf the file: %v, want [%s]", l, loop)
	}
	if !DirectIO(loop) {
		t.Errorf("%s does no direct I/O", loop)
	}
	r := rand.New(rand.NewPCG(3, 4))
	want := randomBytes(r, 3<<20)
	f, err := os.OpenFile(loop, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := alignedBuf(len(want))
	copy(p, want)
	if _, err := f.WriteAt(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	flushes := dev.flushes.Load()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if dev.flushes.Load() == flushes {
		t.Error("fsync of the loop device did not flush the device")
	}
	// The device's discard reaches Zero.
	if out, err := exec.Command("blkdiscard", "-o", "8388608", "-l", "4194304", loop).CombinedOutput(); err != nil {
		t.Logf("blkdiscard: %v %s", err, out) // optional tool
	} else if dev.zeroed.Load() == 0 {
		t.Error("discard on the loop device did not zero")
	}
	if inUse, err := InUse(loop); err != nil || inUse {
		t.Errorf("InUse of an idle device: %v %v", inUse, err)
	}
	f.Close()
	if got := dev.snapshot()[1<<20 : 1<<20+len(want)]; !bytes.Equal(got, want) {
		t.Error("the device does not hold what was written through the loop device")
	}
	if err := Detach(ctx, loop); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, loop+" to be detached after Detach", func() bool { return Backing(loop) != s.Path() })
}

// TestLoopGrow grows the device under an attached loop device: after
// Resized and SetCapacity the device has the new size, keeps its data and
// reads and writes its new tail.
func TestLoopGrow(t *testing.T) {
	const old, grown = 16 << 20, 40 << 20
	dev := &memDevice{b: make([]byte, old)}
	s := mount(t, dev)
	loop := attachLoop(t, s)
	f, err := os.OpenFile(loop, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(5, 6))
	head := alignedBuf(1 << 20)
	copy(head, randomBytes(r, len(head)))
	if _, err := f.WriteAt(head, old-1<<20); err != nil {
		t.Fatal(err)
	}
	if n, err := DeviceSize(loop); err != nil || n != old {
		t.Fatalf("DeviceSize(%s) = %d, %v; want %d", loop, n, err, old)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.Stat(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !AttachedTo(loop, fi) || AttachedTo(loop, other) {
		t.Errorf("AttachedTo(%s): %v for its file, %v for another", loop, AttachedTo(loop, fi), AttachedTo(loop, other))
	}
	for _, size := range []int{old + 8<<20, grown} {
		dev.grow(size - int(dev.Size()))
		if err := s.Resized(); err != nil {
			t.Fatal(err)
		}
		if err := SetCapacity(loop); err != nil {
			t.Fatal(err)
		}
		if n, err := DeviceSize(loop); err != nil || n != uint64(size) {
			t.Fatalf("after growing to %d: DeviceSize(%s) = %d, %v", size, loop, n, err)
		}
	}
	// The new tail reads zeros, then what is written there.
	tail := alignedBuf(1 << 20)
	if _, err := f.ReadAt(tail, grown-1<<20); err != nil {
		t.Fatalf("read the new tail: %v", err)
	}
	if !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Error("the new tail does not read as zeros")
	}
	want := randomBytes(r, len(tail))
	copy(tail, want)
	if _, err := f.WriteAt(tail, grown-1<<20); err != nil {
		t.Fatalf("write the new tail: %v", err)
	}
	clear(tail)
	if _, err := f.ReadAt(tail, grown-1<<20); err != nil || !bytes.Equal(tail, want) {
		t.Errorf("the new tail does not read back what was written (%v)", err)
	}
	got := alignedBuf(len(head))
	if _, err := f.ReadAt(got, old-1<<20); err != nil || !bytes.Equal(got, head) {
		t.Errorf("the old end changed after the grow (%v)", err)
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry(&config.Config{RunDir: t.TempDir()})
	id0, l0, err := r.Reserve()
	if err != nil || id0 != 0 {
		t.Fatalf("first reserve: %d %v", id0, err)
	}
	id1, l1, err := r.Reserve()
	if err != nil || id1 != 1 {
		t.Fatalf("second reserve while 0 is locked: %d %v", id1, err)
	}
	if !r.Alive(0) || !r.Alive(1) || r.Alive(2) {
		t.Error("Alive does not follow the locks")
	}
	if _, err := r.Lock(0); !errors.Is(err, errs.ErrBusy) {
		t.Errorf("Lock of a held id: %v", err)
	}
	st := State{ID: 0, Volume: "disk01", Device: "/dev/loop7", PID: 42, Mountpoint: r.Mountpoint(0), ReadOnly: true}
	if err := r.Save(st); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(r.MappedDir); len(ents) != 1 {
		t.Errorf("mapped/ holds %d entries, want the one record", len(ents))
	}
	l0.Close() // the daemon died: the record stays, the id is not reused
	if r.Alive(0) {
		t.Error("Alive after the lock was released")
	}
	if id, l, err := r.Reserve(); err != nil || id != 2 {
		t.Errorf("reserve with 0 recorded and 1 locked: %d %v", id, err)
	} else {
		l.Close()
	}
	got, err := r.Load(0)
	st.Version = StateVersion
	if err != nil || got != st {
		t.Errorf("load: %+v %v, want %+v", got, err, st)
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || list[0] != st {
		t.Errorf("list: %+v %v", list, err)
	}
	os.WriteFile(filepath.Join(r.MappedDir, "5.json"), []byte("{"), 0o644)
	if _, err := r.List(); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("list with a torn record: %v", err)
	}
	os.Remove(filepath.Join(r.MappedDir, "5.json"))
	if err := r.Remove(0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load(0); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("load after remove: %v", err)
	}
	l1.Close()
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "disk")
	if err := os.Symlink("/dev/loop3", link); err != nil {
		t.Fatal(err)
	}
	states := []State{
		{ID: 0, Volume: "a", Device: "/dev/loop3"},
		{ID: 1, Volume: "b", Device: "/dev/loop4"},
		{ID: 2, Volume: "b", Device: "/dev/loop5"},
	}
	for _, c := range []struct {
		arg    string
		id     int
		errIs  error
		errHas string
	}{
		{arg: "/dev/loop4", id: 1},
		{arg: "/dev//loop4", id: 1},
		{arg: link, id: 0},
		{arg: "2", id: 2},
		{arg: "a", id: 0},
		{arg: "/dev/loop9", errIs: errs.ErrNotFound, errHas: "device /dev/loop9 is not mapped"},
		{arg: "7", errIs: errs.ErrNotFound, errHas: "no mapping with id 7"},
		{arg: "c", errIs: errs.ErrNotFound, errHas: `volume "c" is not mapped`},
		{arg: "b", errIs: errs.ErrInvalid, errHas: "mapped 2 times (/dev/loop4, /dev/loop5)"},
	} {
		s, err := find(states, c.arg)
		if c.errIs == nil {
			if err != nil || s.ID != c.id {
				t.Errorf("find %q: id %d, %v; want id %d", c.arg, s.ID, err, c.id)
			}
			continue
		}
		if !errors.Is(err, c.errIs) || !strings.Contains(fmt.Sprint(err), c.errHas) {
			t.Errorf("find %q: %v; want %v with %q", c.arg, err, c.errIs, c.errHas)
		}
	}
}

func TestListStatus(t *testing.T) {
	cfg := &config.Config{RunDir: t.TempDir()}
	r := NewRegistry(cfg)
	if ms, err := List(cfg); err != nil || len(ms) != 0 {
		t.Fatalf("list of nothing: %v %v", ms, err)
	}
	id, lock, err := r.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	// A live daemon whose device is attached to something else (here:
	// nothing) was detached by hand; a record without a live daemon is
	// dead.
	for _, s := range []State{{ID: id, Volume: "a", Device: "/dev/loop-none", File: "/x/a"}, {ID: id + 1, Volume: "b"}} {
		if err := r.Save(s); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := List(cfg)
	if err != nil || len(ms) != 2 {
		t.Fatalf("list: %+v %v", ms, err)
	}
	if ms[0].Status != "detached" || ms[1].Status != "dead" {
		t.Errorf("statuses %q %q, want detached dead", ms[0].Status, ms[1].Status)
	}
}
