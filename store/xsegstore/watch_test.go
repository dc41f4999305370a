package xsegstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/xsegstore"
	"github.com/archipelago-go/archipelago/xseg"
)

// wokenWithin is how long a wake-up may take before the test calls it
// missing; it is no latency bound (the time is logged).
const wokenWithin = 10 * time.Second

// woken waits for a wake-up on c, failing the test after wokenWithin.
func woken(t *testing.T, c <-chan struct{}, after string) {
	t.Helper()
	start := time.Now()
	select {
	case <-c:
		t.Logf("woken %v after %s", time.Since(start), after)
	case <-time.After(wokenWithin):
		t.Fatalf("not woken %v after %s", wokenWithin, after)
	}
}

// notWoken checks that no wake-up comes on c for d.
func notWoken(t *testing.T, c <-chan struct{}, d time.Duration, while string) {
	t.Helper()
	select {
	case <-c:
		t.Fatalf("woken while %s", while)
	case <-time.After(d):
	}
}

// TestWatchLockFiled checks WatchLock across two filed processes over one
// directory, as two hosts sharing it run them: B's LOCKWAIT, served by
// B's filed, finds the release that A made through A's filed (filestore
// announces nothing, so B's filed polls for it), and B is woken then, not
// while A holds the lock.
func TestWatchLockFiled(t *testing.T) {
	dir := t.TempDir()
	open := testbin.BlockerStores(t, "xsegstorewatch", "filed", func(t testing.TB) []string {
		return []string{"--archip-dir", dir}
	})
	a, b := open(t).(*xsegstore.Store), open(t).(*xsegstore.Store)
	ctx := t.Context()
	if err := a.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatal(err)
	}
	wake, cancel, err := b.WatchLock(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if err := b.TryLock(ctx, "vol", "host-b"); !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("TryLock of A's lock: %v", err)
	}
	// Polling from here (xsegstore waking its subscriber every so often)
	// would wake within this.
	notWoken(t, wake, 300*time.Millisecond, "A holds the lock")
	if err := a.Unlock(ctx, "vol", "host-a", false); err != nil {
		t.Fatal(err)
	}
	woken(t, wake, "A's release")
	if err := b.TryLock(ctx, "vol", "host-b"); err != nil {
		t.Fatalf("TryLock after the wake-up: %v", err)
	}
	cancel()
	// The LOCKWAIT in flight, if any, now waits for B's own lock and is
	// answered within filed's LockWaitMax (2 s).
	testutil.WaitFor(t, 10*time.Second, "the watch to end", func() bool { return b.LockWaits() == 0 })
}

// inProcess serves h on port 1 of a new segment from this process and
// returns a client store for it.
func inProcess(t *testing.T, h peer.Handler) *xsegstore.Store {
	t.Helper()
	seg := testbin.Segment(t, "xsegstorewatch", 16)
	p, err := peer.Start(peer.Options{
		Role: "blocker-test", Segment: seg.Name(), PortStart: 1, PortEnd: 1,
		NrOps: 8, NrThreads: 2, DrainTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := xsegstore.New(c, 1)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestWatchLockShared checks that subscribers of one lock share one
// LOCKWAIT and are all woken by its release, that MaxLockWaits caps the
// locks watched, and that Close wakes the subscribers and ends the
// LOCKWAIT in flight although the blocker would hold it a minute.
func TestWatchLockShared(t *testing.T) {
	mem := memstore.New()
	b := blocker.New(mem, "test-ident")
	b.LockPoll, b.LockPollMax, b.LockWaitMax = time.Millisecond, time.Millisecond, time.Minute
	s := inProcess(t, b)
	s.MaxLockWaits = 1
	ctx := t.Context()
	for _, name := range []string{"a", "b"} {
		if err := mem.TryLock(ctx, name, "host-a"); err != nil {
			t.Fatal(err)
		}
	}
	w1, cancel1, err := s.WatchLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	w2, cancel2, err := s.WatchLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.LockWaits(); n != 1 {
		t.Fatalf("%d locks watched, want 1", n)
	}
	if _, _, err := s.WatchLock(ctx, "b"); !errors.Is(err, errs.ErrBusy) {
		t.Fatalf("WatchLock of a second lock with MaxLockWaits 1: %v, want ErrBusy", err)
	}
	notWoken(t, w1, 50*time.Millisecond, "the lock is held")
	if err := mem.Unlock(ctx, "a", "host-a", false); err != nil {
		t.Fatal(err)
	}
	woken(t, w1, "the release")
	woken(t, w2, "the release")
	cancel1()
	cancel2()
	testutil.WaitFor(t, 10*time.Second, "the watch to end", func() bool { return s.LockWaits() == 0 })

	if err := mem.TryLock(ctx, "a", "host-a"); err != nil {
		t.Fatal(err)
	}
	w3, cancel3, err := s.WatchLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel3()
	notWoken(t, w3, 50*time.Millisecond, "the lock is held")
	s.Close()
	woken(t, w3, "Close")
	testutil.WaitFor(t, time.Second, "the watch to end at Close", func() bool { return s.LockWaits() == 0 })
	if _, _, err := s.WatchLock(ctx, "a"); !errors.Is(err, errs.ErrShutdown) {
		t.Fatalf("WatchLock after Close: %v, want ErrShutdown", err)
	}
}

// noLockWait is a blocker that predates LOCKWAIT.
type noLockWait struct{ *blocker.Blocker }

func (h noLockWait) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	if r.Op() == xseg.OpLockWait {
		return peer.Served, fmt.Errorf("blocker does not serve %s: %w", r.Op(), errs.ErrNotSupported)
	}
	return h.Blocker.Serve(ctx, p, r)
}

// TestWatchLockUnsupported checks that against a blocker without LOCKWAIT
// the subscription in place is woken again and again (its subscriber
// polls) and later WatchLocks fail, so that their callers poll.
func TestWatchLockUnsupported(t *testing.T) {
	mem := memstore.New()
	s := inProcess(t, noLockWait{blocker.New(mem, "test-ident")})
	ctx := t.Context()
	if err := mem.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatal(err)
	}
	wake, cancel, err := s.WatchLock(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		woken(t, wake, fmt.Sprintf("subscribing (%d)", i))
	}
	if _, _, err := s.WatchLock(ctx, "other"); !errors.Is(err, errs.ErrNotSupported) {
		t.Fatalf("WatchLock after LOCKWAIT was refused: %v, want ErrNotSupported", err)
	}
	cancel()
	testutil.WaitFor(t, 10*time.Second, "the watch to end", func() bool { return s.LockWaits() == 0 })
}

// gatedAcquire is a blocker that holds every ACQUIRE until gate is closed,
// telling arrived when one comes.
type gatedAcquire struct {
	*blocker.Blocker
	arrived chan struct{}
	gate    chan struct{}
}

func (h gatedAcquire) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	if r.Op() == xseg.OpAcquire {
		h.arrived <- struct{}{}
		<-h.gate
	}
	return h.Blocker.Serve(ctx, p, r)
}

// TestTryLockOutlivesContext checks that a TryLock whose context ends
// while its ACQUIRE is in flight still reports the answer: the lock was
// taken, and a caller told "context canceled" would leave it held by its
// host with nobody knowing.
func TestTryLockOutlivesContext(t *testing.T) {
	mem := memstore.New()
	h := gatedAcquire{blocker.New(mem, "test-ident"), make(chan struct{}, 1), make(chan struct{})}
	s := inProcess(t, h)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.TryLock(ctx, "vol", "host-a") }()
	select {
	case <-h.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the ACQUIRE never reached the blocker")
	}
	cancel()
	close(h.gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("TryLock whose context ended in flight = %v, want the blocker's answer (nil)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TryLock did not return")
	}
	if owner, err := mem.LockOwner(t.Context(), "vol"); err != nil || owner != "host-a" {
		t.Fatalf("lock owner = %q, %v; want host-a", owner, err)
	}
	if err := s.TryLock(ctx, "vol", "host-a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("TryLock with an ended context = %v, want context.Canceled before sending", err)
	}
}
