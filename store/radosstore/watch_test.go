//go:build ceph

package radosstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// wokenWithin is how long a waiter may take to be woken by a release
// before the test calls it not woken at all; it is no latency bound (the
// notification takes milliseconds; the time is logged).
const wokenWithin = 10 * time.Second

// watchClients opens n stores on one new namespace, each its own RADOS
// client, as peers on n hosts would be. At cleanup they are closed and the
// release object is removed.
func watchClients(t *testing.T, n int) []*radosstore.Store {
	t.Helper()
	o := cluster(t)
	o.Namespace = namespace(t, o)
	ss := make([]*radosstore.Store, n)
	for i := range ss {
		s, err := radosstore.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		ss[i] = s
	}
	t.Cleanup(func() {
		for _, s := range ss {
			s.Close()
		}
		s, err := radosstore.Open(o)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer s.Close()
		if err := s.RemoveReleaseObject(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return ss
}

// watch subscribes to lock name on s; cancelled at cleanup.
func watch(t *testing.T, s *radosstore.Store, name string) <-chan struct{} {
	t.Helper()
	wake, cancel, err := s.WatchLock(t.Context(), name)
	if err != nil {
		t.Fatalf("WatchLock %q: %v", name, err)
	}
	t.Cleanup(cancel)
	return wake
}

// woken waits until wake receives; it fails the test after wokenWithin.
func woken(t *testing.T, wake <-chan struct{}, by string) {
	t.Helper()
	start := time.Now()
	select {
	case <-wake:
		t.Logf("woken %v after %s", time.Since(start), by)
	case <-time.After(wokenWithin):
		t.Fatalf("waiter not woken %v after %s", wokenWithin, by)
	}
}

// notWoken fails the test if wake holds a wake-up.
func notWoken(t *testing.T, wake <-chan struct{}, name, by string) {
	t.Helper()
	select {
	case <-wake:
		t.Errorf("the waiter of %q was woken by %s", name, by)
	default:
	}
}

// TestWatchLockAcrossClients checks that a waiter subscribed on one client
// is woken by an Unlock from another client, plain or forced, and only by
// releases of its own lock.
func TestWatchLockAcrossClients(t *testing.T) {
	ss := watchClients(t, 3)
	a, b, c := ss[0], ss[1], ss[2]
	ctx := t.Context()

	// host-b holds vol; host-a waits for it: WatchLock, then TryLock.
	if err := b.TryLock(ctx, "vol", "host-b"); err != nil {
		t.Fatal(err)
	}
	wake := watch(t, a, "vol")
	other := watch(t, a, "other") // a second waiter of the same store
	var le *store.LockedError
	if err := a.TryLock(ctx, "vol", "host-a"); !errors.As(err, &le) || le.Owner != "host-b" {
		t.Fatalf("TryLock of host-b's lock = %v, want LockedError by host-b", err)
	}
	if err := b.Unlock(ctx, "vol", "host-b", false); err != nil {
		t.Fatal(err)
	}
	woken(t, wake, "host-b's Unlock on another client")
	// The release of vol reached a's watch, and "other" was not woken
	// by it: the same notification served both subscribers.
	notWoken(t, other, "other", "the release of vol")
	if err := a.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatalf("TryLock after the wake-up: %v", err)
	}

	// host-c takes other and dies; host-b breaks its lock with force.
	if err := c.TryLock(ctx, "other", "host-c"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := a.TryLock(ctx, "other", "host-a"); !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("TryLock of host-c's lock = %v, want ErrLocked", err)
	}
	if err := b.Unlock(ctx, "other", "host-b", true); err != nil {
		t.Fatal(err)
	}
	woken(t, other, "a forced Unlock on another client")
	notWoken(t, wake, "vol", "the release of other")
	if err := a.TryLock(ctx, "other", "host-a"); err != nil {
		t.Fatalf("TryLock after the wake-up: %v", err)
	}

	// Unlock by the waiter's own client wakes it too.
	wake2 := watch(t, b, "vol")
	if err := a.Unlock(ctx, "vol", "host-a", false); err != nil {
		t.Fatal(err)
	}
	woken(t, wake2, "an Unlock on another client")
}

// TestWatchLockOneWatch checks that a store watches once however many
// waiters it has, unwatches when idle and at Close, and that Close wakes
// its waiters.
func TestWatchLockOneWatch(t *testing.T) {
	ss := watchClients(t, 2)
	a, b := ss[0], ss[1]
	a.SetWatchIdle(200 * time.Millisecond)
	ctx := t.Context()

	watchers := func() int {
		t.Helper()
		n, err := b.ReleaseWatchers()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitWatchers := func(want int, why string) {
		t.Helper()
		testutil.WaitForErr(t, wokenWithin, fmt.Sprintf("%d watches of lock releases %s", want, why), func() error {
			if n := watchers(); n != want {
				return fmt.Errorf("%d watches", n)
			}
			return nil
		})
	}

	var cancels []func()
	for _, name := range []string{"v1", "v2", "v2"} {
		_, cancel, err := a.WatchLock(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cancel)
	}
	if n := watchers(); n != 1 {
		t.Fatalf("%d watches of lock releases for 3 waiters of one store, want 1", n)
	}
	for _, cancel := range cancels {
		cancel()
		cancel() // twice is harmless
	}
	waitWatchers(0, "once the store's waiters left")

	// The next waiter watches again.
	wake, cancel, err := a.WatchLock(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if n := watchers(); n != 1 {
		t.Fatalf("%d watches of lock releases after a new waiter, want 1", n)
	}
	for len(wake) > 0 { // woken by watchers()' own notification
		<-wake
	}
	a.Close()
	woken(t, wake, "Close")
	if n := watchers(); n != 0 {
		t.Fatalf("%d watches of lock releases after Close, want 0", n)
	}
	if _, _, err := a.WatchLock(ctx, "v1"); !errors.Is(err, errs.ErrShutdown) {
		t.Fatalf("WatchLock after Close = %v, want ErrShutdown", err)
	}
}

// TestWatchLockContext checks WatchLock's checks of its arguments.
func TestWatchLockContext(t *testing.T) {
	s := watchClients(t, 1)[0]
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := s.WatchLock(ctx, "vol"); !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLock with a cancelled context = %v, want context.Canceled", err)
	}
	if _, _, err := s.WatchLock(t.Context(), "a/b"); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("WatchLock of a bad name = %v, want ErrInvalid", err)
	}
}

// TestWatchLockRewatch checks that a broken watch (here: its object was
// deleted under it, which RADOS reports as ENOTCONN) is set up again,
// waking every waiter (releases may have gone unannounced meanwhile), and
// that releases reach the waiters again.
func TestWatchLockRewatch(t *testing.T) {
	ss := watchClients(t, 2)
	a, b := ss[0], ss[1]
	ctx := t.Context()
	wake := watch(t, a, "vol")
	if err := b.RemoveReleaseObject(); err != nil {
		t.Fatal(err)
	}
	woken(t, wake, "the watch broke and was set up again")
	if n, err := b.ReleaseWatchers(); err != nil || n != 1 {
		t.Fatalf("%d watches of lock releases (%v) after the watch was set up again, want 1", n, err)
	}
	for len(wake) > 0 { // woken by ReleaseWatchers' own notification
		<-wake
	}
	if err := b.TryLock(ctx, "vol", "host-b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "vol", "host-b", false); err != nil {
		t.Fatal(err)
	}
	woken(t, wake, "an Unlock on another client, on the new watch")
}

// TestLoggerGetsWatchWarnings checks that the store logs its own warnings
// (here: its watch of lock releases broke) through Options.Logger, which
// radosd sets to its peer's logger so that log_level applies, rather than
// through the process-wide default logger.
func TestLoggerGetsWatchWarnings(t *testing.T) {
	o := cluster(t)
	o.Namespace = namespace(t, o)
	var logged testutil.Buffer
	lo := o
	lo.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := radosstore.Open(lo)
	if err != nil {
		t.Fatal(err)
	}
	b, err := radosstore.Open(o)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		if err := b.RemoveReleaseObject(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		b.Close()
	})
	wake := watch(t, a, "vol")
	if err := b.RemoveReleaseObject(); err != nil {
		t.Fatal(err)
	}
	// The warning is logged before the watch is set up again and the
	// waiters woken.
	woken(t, wake, "the watch broke and was set up again")
	const want = "the watch of lock releases broke"
	if got := logged.String(); !strings.Contains(got, want) {
		t.Errorf("Options.Logger got %q, want a warning %q", got, want)
	}
}
