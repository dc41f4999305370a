package volume

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// engineAs returns another engine, of owner, over v's stores.
func engineAs(t *testing.T, v *env, owner string) *Engine {
	t.Helper()
	e, err := New(faultstore.Wrap(v.maps, v.plan), faultstore.Wrap(v.data, v.plan), Options{Owner: owner, BlockSize: v.bs})
	if err != nil {
		t.Fatal(err)
	}
	e.pollMin, e.pollMax = 50*time.Microsecond, time.Millisecond
	e.fenceWait = 0 // a forced unlock fences at once (fence_test.go runs the real wait)
	return e
}

func wantLockedBy(t *testing.T, err error, owner string) {
	t.Helper()
	var le *store.LockedError
	if !errors.As(err, &le) || le.Owner != owner || !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("err = %v, want a LockedError held by %q", err, owner)
	}
	if !strings.Contains(err.Error(), "locked by "+owner) {
		t.Fatalf("err = %q, want it to say %q", err, "locked by "+owner)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e // host-a
	b := engineAs(t, v, "host-b")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Create(ctx, "shared-vol", 1<<20))
	must(a.Open(ctx, "shared-vol"))
	must(a.Open(ctx, "shared-vol")) // already ours
	must(writeVol(ctx, a, v.dataStore(), "shared-vol", 0, fill('a', 100)))

	t.Run("info names the owner", func(t *testing.T) {
		in, err := b.Info(ctx, "shared-vol")
		must(err)
		if in.LockOwner != "host-a" {
			t.Fatalf("LockOwner = %q", in.LockOwner)
		}
	})

	t.Run("reads go on without the lock and cache nothing", func(t *testing.T) {
		got, err := readVol(ctx, b, v.dataStore(), "shared-vol", 0, 100)
		must(err)
		if !bytes.Equal(got, fill('a', 100)) {
			t.Fatalf("read %s", runs(got))
		}
		// A writes a new block; B must see it at once (no stale map).
		must(writeVol(ctx, a, v.dataStore(), "shared-vol", 8192, fill('c', 10)))
		got, err = readVol(ctx, b, v.dataStore(), "shared-vol", 8192, 10)
		must(err)
		if !bytes.Equal(got, fill('c', 10)) {
			t.Fatalf("read after the other host's write: %s", runs(got))
		}
		if _, err := b.Allocated(ctx, "shared-vol", 0, 1<<20); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("try-once operations fail naming the owner", func(t *testing.T) {
		wantLockedBy(t, b.Open(ctx, "shared-vol"), "host-a")
		wantLockedBy(t, b.Lock(ctx, "shared-vol"), "host-a")
		wantLockedBy(t, b.Snapshot(ctx, "shared-vol", "shared-snap"), "host-a")
		wantLockedBy(t, b.Remove(ctx, "shared-vol"), "host-a")
		wantLockedBy(t, b.Rename(ctx, "shared-vol", "other-name"), "host-a")
		wantLockedBy(t, b.Resize(ctx, "shared-vol", 2<<20, false), "host-a")
		if err := b.Close(ctx, "shared-vol"); !errors.Is(err, errs.ErrNotOwner) {
			t.Fatalf("close by another owner: %v", err)
		}
		if err := b.Unlock(ctx, "shared-vol", false); !errors.Is(err, errs.ErrNotOwner) {
			t.Fatalf("unlock by another owner: %v", err)
		}
	})

	t.Run("writes wait until the lock is released", func(t *testing.T) {
		waiting := make(chan string, 1)
		b.onWait = func(name, owner string) {
			select {
			case waiting <- owner:
			default:
			}
		}
		defer func() { b.onWait = nil }()
		done := make(chan error, 1)
		go func() { done <- writeVol(ctx, b, v.dataStore(), "shared-vol", 4096, fill('b', 100)) }()
		if owner := <-waiting; owner != "host-a" {
			t.Fatalf("waiting for %q", owner)
		}
		select {
		case err := <-done:
			t.Fatalf("write returned while the lock was held: %v", err)
		default:
		}
		must(a.Close(ctx, "shared-vol"))
		must(<-done)
		in, err := a.Info(ctx, "shared-vol")
		must(err)
		if in.LockOwner != "host-b" {
			t.Fatalf("after B's write the lock is %q's", in.LockOwner)
		}
		got, err := readVol(ctx, a, v.dataStore(), "shared-vol", 0, 4196)
		must(err)
		if !bytes.Equal(got, append(append(fill('a', 100), make([]byte, 3996)...), fill('b', 100)...)) {
			t.Fatalf("read %s", runs(got))
		}
	})

	t.Run("a waiting write honours its context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		a.onWait = func(string, string) { cancel() }
		defer func() { a.onWait = nil }()
		_, err := a.MapWrite(cctx, "shared-vol", 0, 1)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if err := a.Trim(cctx, "shared-vol", 0, 4096); !errors.Is(err, context.Canceled) {
			t.Fatalf("trim: err = %v", err)
		}
	})

	t.Run("force unlock", func(t *testing.T) {
		wantLockedBy(t, a.Open(ctx, "shared-vol"), "host-b")
		must(a.Unlock(ctx, "shared-vol", true))
		must(a.Open(ctx, "shared-vol"))
	})

	t.Run("a restart with the same identity takes its lock back", func(t *testing.T) {
		a2 := engineAs(t, v, "host-a")
		must(a2.Open(ctx, "shared-vol"))
		must(writeVol(ctx, a2, v.dataStore(), "shared-vol", 0, fill('d', 10)))
		must(a2.Snapshot(ctx, "shared-vol", "shared-snap"))
	})

	t.Run("a new identity cannot take it until forced", func(t *testing.T) {
		c := engineAs(t, v, "host-c")
		wantLockedBy(t, c.Open(ctx, "shared-vol"), "host-a")
		must(c.Unlock(ctx, "shared-vol", true))
		must(c.Open(ctx, "shared-vol"))
		must(c.Close(ctx, "shared-vol"))
	})
}

// TestSingleCopy: concurrent writers of one shared block share one copy.
func TestSingleCopy(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	e := v.e
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Create(ctx, "origin-vol", 1<<30))
	must(writeVol(ctx, e, v.dataStore(), "origin-vol", 0, fill('o', 3*modelBS)))
	must(e.Snapshot(ctx, "origin-vol", "origin-snap"))
	must(e.Clone(ctx, "origin-snap", "clone-vol", 0))
	must(e.Open(ctx, "clone-vol"))
	v.plan.Reset()
	const writers = 32
	var wg sync.WaitGroup
	objs := make([]string, writers)
	errc := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			segs, err := e.MapWrite(ctx, "clone-vol", uint64(i%3)*modelBS+uint64(i), 1)
			if err != nil {
				errc <- err
				return
			}
			objs[i] = segs[0].Object
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if c := v.plan.Counts(); c.Copies != 3 {
		t.Fatalf("%d copies for 3 blocks written by %d writers", c.Copies, writers)
	}
	for i := range writers {
		if objs[i] != objs[i%3] {
			t.Fatalf("writer %d got %q, writer %d %q", i, objs[i], i%3, objs[i%3])
		}
	}
}

// TestConcurrent runs writers, readers and snapshots of several volumes
// at once (for the race detector) and checks the data at the end.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	e := v.e
	const vols, writers, rounds = 3, 4, 40
	names := []string{"conc-vol-0", "conc-vol-1", "conc-vol-2"}
	for _, n := range names {
		if err := e.Create(ctx, n, 64<<20); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for vi := range vols {
		for w := range writers {
			wg.Go(func() {
				for r := range rounds {
					// Each writer owns its blocks: block = w + writers*k.
					blk := uint64(w + writers*(r%20))
					p := fill(byte('A'+w), modelBS)
					if err := writeVol(ctx, e, v.dataStore(), names[vi], blk*modelBS, p); err != nil {
						errc <- err
						return
					}
					if _, err := readVol(ctx, e, v.dataStore(), names[vi], blk*modelBS, modelBS); err != nil {
						errc <- err
						return
					}
				}
			})
		}
	}
	wg.Go(func() {
		for i := range 5 {
			if err := e.Snapshot(ctx, names[i%vols], "conc-snap-"+string(rune('a'+i))); err != nil {
				errc <- err
				return
			}
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for vi := range vols {
		for w := range writers {
			for k := range 20 {
				blk := uint64(w + writers*k)
				got, err := readVol(ctx, e, v.dataStore(), names[vi], blk*modelBS, modelBS)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, fill(byte('A'+w), modelBS)) {
					t.Fatalf("%s block %d: %s", names[vi], blk, runs(got))
				}
			}
		}
	}
	checkInvariants(t, v)
}
