package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// fenceHosts opens the stores of one more host on shared storage: two
// calls are two hosts.
type fenceHosts func(t *testing.T) (maps, data store.Store)

// fenceBackends: one memstore pair shared by both engines, and a directory
// with a filestore.Store pair per host (two processes on one directory).
func fenceBackends(t *testing.T) map[string]fenceHosts {
	maps, data := memstore.New(), memstore.New()
	dir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "fence-test-"); err == nil {
		dir = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	return map[string]fenceHosts{
		"memstore": func(t *testing.T) (store.Store, store.Store) { return maps, data },
		"filestore": func(t *testing.T) (store.Store, store.Store) {
			t.Helper()
			m, err := filestore.Open(filestore.Options{Dir: dir + "/maps"})
			if err != nil {
				t.Fatal(err)
			}
			d, err := filestore.Open(filestore.Options{Dir: dir + "/data"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close(); d.Close() })
			return m, d
		},
	}
}

// fenceHost is an engine of one owner with its stores.
type fenceHost struct {
	e    *Engine
	data store.Store
}

// newFenceHost returns a host whose engine looks at its lock at every
// chance (confirmEvery 0) and breaks a lock at once (fenceWait 0): what
// it finds does not depend on time. TestFenceLease runs the real times.
func newFenceHost(t *testing.T, open fenceHosts, owner string) *fenceHost {
	t.Helper()
	maps, data := open(t)
	e, err := New(maps, data, Options{Owner: owner, BlockSize: modelBS})
	if err != nil {
		t.Fatal(err)
	}
	e.confirmEvery, e.fenceWait = 0, 0
	return &fenceHost{e: e, data: data}
}

func (h *fenceHost) read(t *testing.T, name string, n uint64) []byte {
	t.Helper()
	b, err := readVol(context.Background(), h.e, h.data, name, 0, n)
	if err != nil {
		t.Fatalf("%s reads: %v", h.e.Owner(), err)
	}
	return b
}

func wantFenced(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, errs.ErrFenced) {
		t.Fatalf("%s: err = %v, want ErrFenced", what, err)
	}
}

// TestForcedUnlockFencesTheOldHolder: host A holds a volume and writes
// (its composer caches the writable objects); B breaks the lock, writes
// and flushes; A goes on writing through what it cached. A's flush fails,
// and so do its later map changes, without A taking the lock back; B's
// flushed write is not overwritten by A's late one; both hosts read one
// image, before and after both restart.
func TestForcedUnlockFencesTheOldHolder(t *testing.T) {
	for name, open := range fenceBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const vol, size = "fenced-vol", 16 * modelBS
			a, b := newFenceHost(t, open, "host-a"), newFenceHost(t, open, "host-b")
			if err := a.e.Create(ctx, vol, size); err != nil {
				t.Fatal(err)
			}
			if err := writeVol(ctx, a.e, a.data, vol, 0, fill('a', 2*modelBS)); err != nil {
				t.Fatal(err)
			}
			if err := a.e.Flush(ctx, vol); err != nil {
				t.Fatalf("A's flush while it holds the lock: %v", err)
			}
			// What A's composer caches: blocks 0 and 1, writable in place.
			cached, err := a.e.MapWrite(ctx, vol, 0, 2*modelBS)
			if err != nil {
				t.Fatal(err)
			}

			if err := b.e.Unlock(ctx, vol, false); !errors.Is(err, errs.ErrNotOwner) || !strings.Contains(err.Error(), "host-a") {
				t.Fatalf("B's unlock without force: %v, want ErrNotOwner naming host-a", err)
			}
			if err := b.e.Unlock(ctx, vol, true); err != nil {
				t.Fatalf("B's forced unlock: %v", err)
			}
			if err := writeVol(ctx, b.e, b.data, vol, 0, fill('b', 100)); err != nil {
				t.Fatalf("B's write: %v", err)
			}
			if err := writeVol(ctx, b.e, b.data, vol, modelBS, fill('B', modelBS)); err != nil {
				t.Fatalf("B's write: %v", err)
			}
			if err := b.e.Flush(ctx, vol); err != nil {
				t.Fatalf("B's flush: %v", err)
			}
			bView := b.read(t, vol, size)

			// A writes late, in place, through its cached mappings.
			for _, s := range cached {
				if err := a.data.WriteAt(ctx, s.Object, fill('x', int(s.Size)), int64(s.Offset), true); err != nil {
					t.Fatal(err)
				}
			}
			// A's info shows the volume as it is, not its stale cache.
			if ia, ib := mustInfo(t, a.e, vol), mustInfo(t, b.e, vol); ia != ib {
				t.Fatalf("A's info %+v, B's %+v", ia, ib)
			}
			wantFenced(t, "A's flush after the break", a.e.Flush(ctx, vol))
			if !a.e.Fenced(vol) || a.e.Held(vol) {
				t.Fatalf("A: fenced %v, held %v; want fenced and not held", a.e.Fenced(vol), a.e.Held(vol))
			}
			_, err = a.e.MapWrite(ctx, vol, 4*modelBS, 10)
			wantFenced(t, "A's write of a new block", err)
			_, err = a.e.MapWrite(ctx, vol, 0, 10)
			wantFenced(t, "A's write of a block it owned", err)
			wantFenced(t, "A's trim", a.e.Trim(ctx, vol, 0, modelBS))
			wantFenced(t, "A's flush again", a.e.Flush(ctx, vol))
			if owner, _ := b.e.locker.LockOwner(ctx, lockName(vol)); owner != "host-b" {
				t.Fatalf("lock held by %q after A's attempts, want host-b", owner)
			}

			// One image, B's writes in it.
			got := b.read(t, vol, size)
			if !bytes.Equal(got, bView) {
				t.Fatalf("B's view changed with A's late writes:\n%s\nwas\n%s", runs(got), runs(bView))
			}
			if !bytes.Equal(got[:100], fill('b', 100)) || !bytes.Equal(got[modelBS:2*modelBS], fill('B', modelBS)) {
				t.Fatalf("B's flushed writes lost: %s", runs(got))
			}
			if ga := a.read(t, vol, size); !bytes.Equal(ga, got) {
				t.Fatalf("A reads\n%s\nB reads\n%s", runs(ga), runs(got))
			}
			if err := Check(ctx, b.e.maps); err != nil {
				t.Fatal(err)
			}

			// Both hosts restart: still one image.
			if err := b.e.Close(ctx, vol); err != nil {
				t.Fatal(err)
			}
			a2, b2 := newFenceHost(t, open, "host-a"), newFenceHost(t, open, "host-b")
			if ga, gb := a2.read(t, vol, size), b2.read(t, vol, size); !bytes.Equal(ga, got) || !bytes.Equal(gb, got) {
				t.Fatalf("after restarts A reads\n%s\nB reads\n%s\nwant\n%s", runs(ga), runs(gb), runs(got))
			}

			// Closing ends the fence: A writes again, in the map B left.
			if err := a.e.Close(ctx, vol); err != nil {
				t.Fatal(err)
			}
			if err := writeVol(ctx, a.e, a.data, vol, 2*modelBS, fill('c', 10)); err != nil {
				t.Fatalf("A's write after close: %v", err)
			}
			if err := a.e.Flush(ctx, vol); err != nil {
				t.Fatal(err)
			}
			copy(got[2*modelBS:], fill('c', 10))
			if gb := b2.read(t, vol, size); !bytes.Equal(gb, got) {
				t.Fatalf("B reads\n%s\nwant\n%s", runs(gb), runs(got))
			}
		})
	}
}

// TestFencedManagementDoesNotRetake: an operation of the old holder after
// the break (the lock now free) fails instead of taking the lock again
// and changing the map from its stale cache.
func TestFencedManagementDoesNotRetake(t *testing.T) {
	for name, open := range fenceBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const vol = "fenced-mgmt"
			a, b := newFenceHost(t, open, "host-a"), newFenceHost(t, open, "host-b")
			if err := a.e.Create(ctx, vol, 8*modelBS); err != nil {
				t.Fatal(err)
			}
			if err := writeVol(ctx, a.e, a.data, vol, 0, fill('a', 10)); err != nil {
				t.Fatal(err)
			}
			before, err := b.e.Info(ctx, vol)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.e.Unlock(ctx, vol, true); err != nil {
				t.Fatal(err)
			}
			after, err := b.e.Info(ctx, vol)
			if err != nil {
				t.Fatal(err)
			}
			if after.LockOwner != "" || after.Epoch <= before.Epoch {
				t.Fatalf("after unlock -f: owner %q, epoch %d (was %d); want free, a fresh epoch", after.LockOwner, after.Epoch, before.Epoch)
			}
			wantFenced(t, "A's snapshot", a.e.Snapshot(ctx, vol, vol+"-snap"))
			wantFenced(t, "A's resize", a.e.Resize(ctx, vol, 16*modelBS, false))
			_, err = a.e.MapWrite(ctx, vol, 0, 1)
			wantFenced(t, "A's write", err)
			if _, err := b.e.locker.LockOwner(ctx, lockName(vol)); !errors.Is(err, errs.ErrNotFound) {
				t.Fatalf("the lock is taken (%v) after the fenced host's attempts", err)
			}
			// A read is no write: it goes on, from storage.
			if got := a.read(t, vol, 10); !bytes.Equal(got, fill('a', 10)) {
				t.Fatalf("A reads %s", runs(got))
			}
			// An explicit Open starts afresh.
			if err := a.e.Open(ctx, vol); err != nil {
				t.Fatal(err)
			}
			if err := writeVol(ctx, a.e, a.data, vol, 0, fill('d', 10)); err != nil {
				t.Fatal(err)
			}
			if got := b.read(t, vol, 10); !bytes.Equal(got, fill('d', 10)) {
				t.Fatalf("B reads %s", runs(got))
			}
		})
	}
}

// TestFenceLease: with the real times, once a forced unlock returns the
// old holder's next mapping of a block it owns (what its composer asks
// for when its cached mappings' lease ran out) fails, though it neither
// flushes nor changes its map, and so does its next flush; before the
// break its flushes pass without asking the store each time.
func TestFenceLease(t *testing.T) {
	ctx := context.Background()
	open := fenceBackends(t)["memstore"]
	const vol = "fenced-lease"
	a, b := newFenceHost(t, open, "host-a"), newFenceHost(t, open, "host-b")
	a.e.confirmEvery, b.e.fenceWait = ConfirmEvery, FenceWait
	if err := a.e.Create(ctx, vol, 8*modelBS); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, a.e, a.data, vol, 0, fill('a', 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.e.MapWrite(ctx, vol, 0, 10); err != nil {
		t.Fatal(err)
	}
	if err := a.e.Flush(ctx, vol); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.e.Unlock(ctx, vol, true); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < FenceWait {
		t.Fatalf("the forced unlock took %v, less than FenceWait", took)
	}
	_, err := a.e.MapWrite(ctx, vol, 0, 10)
	wantFenced(t, "A's mapping of a block it owned, after the forced unlock returned", err)
	wantFenced(t, "A's flush", a.e.Flush(ctx, vol))
	// A's reads go on, uncached, and are not refused.
	if got := a.read(t, vol, 10); !bytes.Equal(got, fill('a', 10)) {
		t.Fatalf("A reads %s", runs(got))
	}
}

// TestUnlockMessages: unlocking a volume nobody holds is an error that
// says so; forced, it fences and succeeds.
func TestUnlockMessages(t *testing.T) {
	ctx := context.Background()
	open := fenceBackends(t)["memstore"]
	a := newFenceHost(t, open, "host-a")
	if err := a.e.Create(ctx, "not-locked", modelBS); err != nil {
		t.Fatal(err)
	}
	err := a.e.Unlock(ctx, "not-locked", false)
	if !errors.Is(err, errs.ErrNotFound) || !strings.Contains(err.Error(), `volume "not-locked" is not locked`) {
		t.Fatalf("unlock of a free lock: %v", err)
	}
	err = a.e.Unlock(ctx, "no-such-volume", false)
	if !errors.Is(err, errs.ErrNotFound) || strings.Contains(err.Error(), "_lock") || !strings.Contains(err.Error(), `"no-such-volume"`) {
		t.Fatalf("unlock of a missing volume: %v", err)
	}
	in, _ := a.e.Info(ctx, "not-locked")
	if err := a.e.Unlock(ctx, "not-locked", true); err != nil {
		t.Fatalf("forced unlock of a free lock: %v", err)
	}
	if in2, _ := a.e.Info(ctx, "not-locked"); in2.Epoch <= in.Epoch || in2.LockOwner != "" {
		t.Fatalf("forced unlock of a free lock: epoch %d -> %d, owner %q", in.Epoch, in2.Epoch, in2.LockOwner)
	}
	if err := a.e.Lock(ctx, "not-locked"); err != nil {
		t.Fatal(err)
	}
	if err := a.e.Unlock(ctx, "not-locked", false); err != nil {
		t.Fatalf("unlock of our own lock: %v", err)
	}
}

// TestFenceUnderConcurrentWrites: writers of the old holder write and
// flush their own blocks in a loop while the lock is broken; each stops at
// its first failure, which must be ErrFenced. No flushed write is lost:
// every block holds what its writer last flushed or a later write, and
// both hosts read the same.
func TestFenceUnderConcurrentWrites(t *testing.T) {
	for name, open := range fenceBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const vol, writers = "fenced-busy", 8
			a, b := newFenceHost(t, open, "host-a"), newFenceHost(t, open, "host-b")
			if err := a.e.Create(ctx, vol, writers*modelBS); err != nil {
				t.Fatal(err)
			}
			flushed := make([]byte, writers)
			errc := make(chan error, writers)
			started := make(chan struct{}, writers)
			var broken atomic.Bool
			for i := range writers {
				go func() {
					after := 0 // rounds begun after the break
					for k := byte(1); ; {
						if broken.Load() {
							if after++; after > 2 {
								errc <- nil // two write+flush rounds passed after the break
								return
							}
						}
						err := writeVol(ctx, a.e, a.data, vol, uint64(i)*modelBS, fill(k, modelBS))
						if err == nil {
							err = a.e.Flush(ctx, vol)
						}
						if err != nil {
							errc <- err
							return
						}
						if flushed[i] == 0 {
							started <- struct{}{}
						}
						flushed[i] = k
						if k < 255 {
							k++
						}
					}
				}()
			}
			for range writers {
				<-started
			}
			if err := b.e.Unlock(ctx, vol, true); err != nil {
				t.Fatal(err)
			}
			broken.Store(true)
			for range writers {
				wantFenced(t, "an old writer's end", <-errc)
			}
			got := b.read(t, vol, writers*modelBS)
			for i := range writers {
				blk := got[i*modelBS : (i+1)*modelBS]
				if k := blk[0]; !bytes.Equal(blk, fill(k, modelBS)) || k < flushed[i] {
					t.Fatalf("block %d: %s, last flushed %d", i, runs(blk), flushed[i])
				}
			}
			if ga := a.read(t, vol, writers*modelBS); !bytes.Equal(ga, got) {
				t.Fatal("the hosts read different images")
			}
			if err := Check(ctx, b.e.maps); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mustInfo(t *testing.T, e *Engine, name string) Info {
	t.Helper()
	in, err := e.Info(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return in
}
