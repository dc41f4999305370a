package volume

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/storetest"
	"github.com/archipelago-go/archipelago/store/xsegstore"
)

// wakeWithin is how long a waiting write may take after the release
// before the test calls it stuck; no latency bound (the time is logged).
// Engines that must be woken poll once a minute.
const wakeWithin = 10 * time.Second

// announcingHosts returns engines of host-a and host-b over one map
// store that announces releases; host-b polls once a minute, so only a
// wake-up lets its writes go on sooner.
func announcingHosts(t *testing.T) (maps *storetest.Announcing, data *memstore.Store, a, b *Engine) {
	t.Helper()
	maps, data = storetest.NewAnnouncing(), memstore.New()
	engine := func(owner string) *Engine {
		e, err := New(maps, data, Options{Owner: owner, BlockSize: modelBS})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	a, b = engine("host-a"), engine("host-b")
	b.pollMin, b.pollMax, b.pollWatchMax = time.Minute, time.Minute, time.Minute
	return maps, data, a, b
}

// TestWriteWokenByRelease checks that a write waiting for another host's
// lock over a locker that announces releases goes on when the lock is
// released, not at its next poll, and leaves its subscription.
func TestWriteWokenByRelease(t *testing.T) {
	ctx := context.Background()
	maps, data, a, b := announcingHosts(t)
	const vol = "watched-vol"
	createOpen(t, a, vol)
	done, waits := waitingWrite(t, b, data, vol, 4096, fill('b', 100), "host-a")
	if n := maps.Watchers(); n != 1 {
		t.Fatalf("%d subscribers while the write waits, want 1", n)
	}
	select {
	case err := <-done:
		t.Fatalf("write returned while the lock was held: %v", err)
	default:
	}
	if err := a.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting write: %v", err)
		}
		t.Logf("the write went on %v after the release", time.Since(start))
	case <-time.After(wakeWithin):
		t.Fatalf("the write still waits %v after the release", wakeWithin)
	}
	if len(waits) != 0 {
		t.Fatalf("the write waited %d more times", len(waits))
	}
	if n := maps.Watchers(); n != 0 {
		t.Fatalf("%d subscribers after the write, want 0", n)
	}
	in, err := a.Info(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	if in.LockOwner != "host-b" {
		t.Fatalf("after B's write the lock is %q's", in.LockOwner)
	}
	got, err := readVol(ctx, a, data, vol, 4096, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fill('b', 100)) {
		t.Fatalf("read %s", runs(got))
	}
}

// TestWaitWithWatchHonoursContext checks that a write waiting with a
// subscription ends with its context, takes nothing, and leaves its
// subscription; and that a Trim waits alike.
func TestWaitWithWatchHonoursContext(t *testing.T) {
	ctx := context.Background()
	maps, _, a, b := announcingHosts(t)
	const vol = "watched-vol"
	createOpen(t, a, vol)
	cctx, cancel := context.WithCancel(ctx)
	b.onWait = func(string, string) { cancel() }
	if _, err := b.MapWrite(cctx, vol, 0, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("MapWrite: err = %v, want context.Canceled", err)
	}
	if err := b.Trim(cctx, vol, 0, 4096); !errors.Is(err, context.Canceled) {
		t.Fatalf("Trim: err = %v, want context.Canceled", err)
	}
	if n := maps.Watchers(); n != 0 {
		t.Fatalf("%d subscribers after the waits ended, want 0", n)
	}
	if err := a.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	in, err := a.Info(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	if in.LockOwner != "" {
		t.Fatalf("after the cancelled waits the lock is %q's, want free", in.LockOwner)
	}
}

// TestWaitPollsWhenWatchFails checks that a write still waits by polling
// when the locker cannot watch.
func TestWaitPollsWhenWatchFails(t *testing.T) {
	ctx := context.Background()
	maps, data, a, b := announcingHosts(t)
	maps.WatchErr = errors.New("no watch today")
	b.pollMin, b.pollMax = 50*time.Microsecond, time.Millisecond
	const vol = "watched-vol"
	createOpen(t, a, vol)
	done, _ := waitingWrite(t, b, data, vol, 0, fill('b', 10), "host-a")
	if err := a.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wakeWithin):
		t.Fatalf("the write still waits %v after the release", wakeWithin)
	}
}

// TestWriteWokenThroughBlocker checks the whole chain as mapperd runs it:
// two engines reach one blocker through the segment (xsegstore), whose
// store announces releases. A's Close releases the lock with RELEASE, the
// blocker's store wakes the LOCKWAIT that B's xsegstore keeps in flight,
// its answer wakes B's waiting write. Every poll on the way (B's, the
// blocker's) and the blocker's LockWaitMax are a minute long.
func TestWriteWokenThroughBlocker(t *testing.T) {
	ctx := context.Background()
	maps, data := storetest.NewAnnouncing(), memstore.New()
	b := blocker.New(maps, "blocker-ident")
	b.LockPoll, b.LockPollMax, b.LockWatchPollMax, b.LockWaitMax = time.Minute, time.Minute, time.Minute, time.Minute
	seg := testbin.Segment(t, "volumewatch", 16)
	p, err := peer.Start(peer.Options{
		Role: "blockerm-test", Segment: seg.Name(), PortStart: 1, PortEnd: 1,
		NrOps: 8, NrThreads: 2, DrainTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	engine := func(owner string) *Engine {
		c, err := peer.NewClient(seg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		xs := xsegstore.New(c, 1)
		t.Cleanup(func() { xs.Close() })
		e, err := New(xs, data, Options{Owner: owner, BlockSize: modelBS})
		if err != nil {
			t.Fatal(err)
		}
		e.pollMin, e.pollMax, e.pollWatchMax = time.Minute, time.Minute, time.Minute
		return e
	}
	hostA, hostB := engine("host-a"), engine("host-b")
	const vol = "watched-vol"
	createOpen(t, hostA, vol)
	done, _ := waitingWrite(t, hostB, data, vol, 0, fill('b', 100), "host-a")
	testutil.WaitFor(t, wakeWithin, "the blocker to subscribe", func() bool { return maps.Watchers() == 1 })
	if err := hostA.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting write: %v", err)
		}
		t.Logf("the write went on %v after the release", time.Since(start))
	case <-time.After(wakeWithin):
		t.Fatalf("the write still waits %v after the release", wakeWithin)
	}
	if !hostB.Held(vol) {
		t.Fatal("B does not hold the volume after its write")
	}
	if err := hostB.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	// B's LOCKWAIT in flight, if any, ends with that release.
	testutil.WaitFor(t, wakeWithin, "the blocker to unsubscribe", func() bool { return maps.Watchers() == 0 })
}

// createOpen creates a 1 MiB volume on e and opens it there: e's host
// holds its lock.
func createOpen(t *testing.T, e *Engine, vol string) {
	t.Helper()
	if err := e.Create(context.Background(), vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := e.Open(context.Background(), vol); err != nil {
		t.Fatal(err)
	}
}

// waitingWrite starts e's write of p at off of vol, which must wait for
// holder's lock, and returns once it waits: where its result will come,
// and the owners of its later waits (up to 10 are kept; the engine never
// blocks on them).
func waitingWrite(t *testing.T, e *Engine, data store.Store, vol string, off uint64, p []byte, holder string) (<-chan error, <-chan string) {
	t.Helper()
	waits := make(chan string, 10)
	e.onWait = func(_, owner string) {
		select {
		case waits <- owner:
		default:
		}
	}
	done := make(chan error, 1)
	go func() { done <- writeVol(context.Background(), e, data, vol, off, p) }()
	if owner := <-waits; owner != holder {
		t.Fatalf("waiting for %q, want %q", owner, holder)
	}
	return done, waits
}
