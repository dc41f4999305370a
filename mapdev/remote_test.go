package mapdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
)

const mib = 1 << 20

func dialRemote(t *testing.T, s *stacktest.Stack, volume string) *Remote {
	t.Helper()
	r, err := DialRemote(context.Background(), RemoteOptions{Segment: s.Seg.Name(), VlmcdPort: stacktest.Vlmcd, Volume: volume})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRemoteGrow grows a volume under a Remote doing I/O: Grow takes the
// new size without failing a request, the new tail reads zeros and takes
// writes, and the session of the old size is closed (the volume's lock is
// free once the Remote closes). A shrink is not followed.
func TestRemoteGrow(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	ctx := context.Background()
	s.Create(t, "g", 8*mib)
	r := dialRemote(t, s, "g")
	closed := false
	defer func() {
		if !closed {
			r.Close()
		}
	}()
	head := bytes.Repeat([]byte{0xa5}, mib)
	if err := r.WriteAt(ctx, head, 7*mib, false); err != nil {
		t.Fatal(err)
	}
	if grew, err := r.Grow(ctx); err != nil || grew {
		t.Fatalf("Grow of an unchanged volume: %v, %v", grew, err)
	}

	// I/O runs on while the volume grows twice.
	var stop atomic.Bool
	var ops atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for i := 0; !stop.Load(); i++ {
				off := uint64((w*16 + i%16) * len(buf))
				var err error
				if i%2 == 0 {
					err = r.WriteAt(ctx, buf, off, false)
				} else {
					err = r.ReadAt(ctx, buf, off)
				}
				if err != nil {
					errc <- err
					return
				}
				ops.Add(1)
			}
		}()
	}
	// moreOps waits until the workers did n more requests (or one failed).
	moreOps := func(n int64) {
		for want := ops.Load() + n; ops.Load() < want && len(errc) == 0; {
			time.Sleep(time.Millisecond)
		}
	}
	for _, size := range []uint64{16 * mib, 24 * mib} {
		moreOps(100)
		s.Resize(t, "g", size, false)
		grew, err := r.Grow(ctx)
		if err != nil || !grew || r.Size() != size {
			t.Fatalf("Grow to %d: %v, %v; Size %d", size, grew, err, r.Size())
		}
		if err := r.WriteAt(ctx, head, size-mib, false); err != nil {
			t.Fatalf("write at the new tail (%d): %v", size-mib, err)
		}
	}
	moreOps(100)
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("I/O during the grow: %v", err)
	}
	got := make([]byte, mib)
	if err := r.ReadAt(ctx, got, 7*mib); err != nil || !bytes.Equal(got, head) {
		t.Errorf("the data before the grow: %v", err)
	}
	if err := r.ReadAt(ctx, got, 16*mib); err != nil || !bytes.Equal(got, make([]byte, mib)) {
		t.Errorf("the grown range does not read zeros: %v", err)
	}

	// A shrink elsewhere is not followed.
	s.Resize(t, "g", 20*mib, true)
	if grew, err := r.Grow(ctx); err != nil || grew || r.Size() != 24*mib {
		t.Errorf("Grow after a shrink: %v, %v; Size %d", grew, err, r.Size())
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Every session ended, those of the old sizes too: no lock is left.
	if vi := s.Info(t, "g"); vi.LockOwner != "" {
		t.Errorf("after Close the volume is still locked by %q: a session was left open", vi.LockOwner)
	}
}

// TestRemoteGrowReplaced: a volume removed (by force, while mapped) and
// created again under the mapped name is another volume: Grow does not
// take its size.
func TestRemoteGrowReplaced(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	ctx := context.Background()
	s.Create(t, "g", 8*mib)
	r := dialRemote(t, s, "g")
	defer r.Close()
	if err := s.Volumes().RemoveForce(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	s.Create(t, "g", 16*mib)
	grew, err := r.Grow(ctx)
	if grew || err == nil || !errors.Is(err, errs.ErrNotFound) || r.Size() != 8*mib {
		t.Errorf("Grow after the volume was replaced: %v, %v; Size %d", grew, err, r.Size())
	}
}

// TestMountRemoteLent serves a volume through Mount over a Remote, whose
// segment buffers the FUSE server reads WRITEs into and answers READs
// from: writes of every size class (copied into a buffer of their own
// size up to smallIO, served from the read buffer above it) from several
// goroutines at once land where they belong, as the volume itself then
// reads (through a buffer of the test's, not a lent one), and read back
// through the file.
func TestMountRemoteLent(t *testing.T) {
	needFUSE(t)
	s := stacktest.Start(t, stacktest.Options{})
	ctx := context.Background()
	const size = 32 * mib
	s.Create(t, "lent", size)
	r := dialRemote(t, s, "lent")
	t.Cleanup(func() { r.Close() })
	srv := mount(t, r)
	oracle := make([]byte, size)
	const workers = 4
	stripe := size / workers
	sizes := []int{4096, smallIO, smallIO + 4096, 256 << 10, mib}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(srv.Path(), os.O_RDWR|syscall.O_DIRECT, 0)
			if err != nil {
				errc <- err
				return
			}
			defer f.Close()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 40 {
				n := sizes[(i+w)%len(sizes)]
				off := w*stripe + rnd.IntN((stripe-n)/4096+1)*4096
				p := alignedBuf(n)
				copy(p, randomBytes(rnd, n))
				if _, err := f.WriteAt(p, int64(off)); err != nil {
					errc <- fmt.Errorf("write [%d,+%d): %w", off, n, err)
					return
				}
				copy(oracle[off:], p) // the stripes are disjoint
				q := alignedBuf(n)
				if _, err := f.ReadAt(q, int64(off)); err != nil || !bytes.Equal(p, q) {
					errc <- fmt.Errorf("read back [%d,+%d): %v, equal %v", off, n, err, bytes.Equal(p, q))
					return
				}
			}
			if err := f.Sync(); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, oracle); i >= 0 {
		t.Fatalf("the volume differs from what was written through the file from byte %d", i)
	}
	all, err := os.ReadFile(srv.Path())
	if err != nil || !bytes.Equal(all, oracle) {
		t.Fatalf("reading the whole file: %v, equal %v", err, bytes.Equal(all, oracle))
	}
}

// firstDiff is the first index where a and b differ, -1 if none.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
