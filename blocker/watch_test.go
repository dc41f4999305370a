package blocker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/storetest"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// answeredWithin is how long a waiting ACQUIRE may take to be answered
// after the release before the test calls it not answered at all; it is
// no latency bound (the time is logged). The tests that use it set the
// blocker's polling to a minute, so that only a wake-up can answer sooner.
const answeredWithin = 10 * time.Second

// waitingAcquire sends an ACQUIRE of lock name for owner, which waits, and
// returns where its answer will come.
func waitingAcquire(f *filed, name, owner string) <-chan reply {
	answer := make(chan reply, 1)
	go func() {
		rep, err := f.send(context.Background(), req{op: xseg.OpAcquire, target: name, p: &wire.Lock{Owner: owner}})
		if err != nil {
			rep.err = fmt.Errorf("transport: %w", err)
		}
		answer <- rep
	}()
	return answer
}

// until waits for cond, failing the test after answeredWithin.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, answeredWithin, what, cond)
}

// granted checks that the waiting ACQUIRE is answered with the lock
// within answeredWithin of the release by.
func granted(t *testing.T, answer <-chan reply, by string) {
	t.Helper()
	start := time.Now()
	select {
	case rep := <-answer:
		if rep.err != nil {
			t.Fatalf("waiting ACQUIRE, after %s: %v", by, rep.err)
		}
		t.Logf("waiting ACQUIRE answered %v after %s", time.Since(start), by)
	case <-time.After(answeredWithin):
		t.Fatalf("waiting ACQUIRE not answered %v after %s", answeredWithin, by)
	}
}

// TestAcquireWokenByRelease checks that a waiting ACQUIRE over a store that
// announces releases is answered when the lock is released, not at its
// next poll (a minute away), and then leaves its subscription.
func TestAcquireWokenByRelease(t *testing.T) {
	st := storetest.NewAnnouncing()
	ip := startInProcess(t, memstore.New())
	b := blocker.New(st, "test-ident")
	b.LockPoll, b.LockPollMax = time.Minute, time.Minute
	ip.h.b.Store(b)
	ctx := t.Context()

	if err := st.TryLock(ctx, "vol", "A"); err != nil {
		t.Fatal(err)
	}
	answer := waitingAcquire(ip.filed, "vol", "B")
	// The ACQUIRE tried, subscribed and tried again: from now on only a
	// wake-up, or the poll a minute away, can answer it.
	until(t, "subscribed and tried twice", func() bool { return st.Watchers() == 1 && st.Tries.Load() >= 3 })
	select {
	case rep := <-answer:
		t.Fatalf("ACQUIRE of a held lock answered %v without waiting", rep.err)
	default:
	}
	if err := st.Unlock(ctx, "vol", "A", false); err != nil {
		t.Fatal(err)
	}
	granted(t, answer, "the release")
	if owner, err := st.LockOwner(ctx, "vol"); err != nil || owner != "B" {
		t.Fatalf("after the wait the lock is held by %q (%v), want B", owner, err)
	}
	until(t, "unsubscribed", func() bool { return st.Watchers() == 0 })

	// A wake-up that finds the lock taken again waits on.
	answer = waitingAcquire(ip.filed, "vol", "C")
	until(t, "subscribed", func() bool { return st.Watchers() == 1 })
	tries := st.Tries.Load()
	if err := st.Unlock(ctx, "vol", "B", false); err != nil {
		t.Fatal(err)
	}
	if err := st.TryLock(ctx, "vol", "D"); err != nil {
		// The waiter was quicker; nothing more to see.
		granted(t, answer, "the release")
		return
	}
	until(t, "retried after the wake-up", func() bool { return st.Tries.Load() >= tries+2 })
	select {
	case rep := <-answer:
		t.Fatalf("ACQUIRE answered %v while D holds the lock", rep.err)
	default:
	}
	if err := st.Unlock(ctx, "vol", "D", true); err != nil {
		t.Fatal(err)
	}
	granted(t, answer, "a forced release")
}

// TestAcquirePollsUnannounced checks that a waiting ACQUIRE still finds a
// release that was not announced, or when the store cannot watch, by
// polling.
func TestAcquirePollsUnannounced(t *testing.T) {
	for _, c := range []struct {
		name     string
		watchErr error
	}{{"watching", nil}, {"cannot watch", errors.New("no watch today")}} {
		t.Run(c.name, func(t *testing.T) {
			st := storetest.NewAnnouncing()
			st.WatchErr = c.watchErr
			ip := startInProcess(t, memstore.New())
			b := blocker.New(st, "test-ident")
			b.LockPoll, b.LockPollMax, b.LockWatchPollMax = time.Millisecond, 10*time.Millisecond, 20*time.Millisecond
			ip.h.b.Store(b)
			ctx := t.Context()
			if err := st.TryLock(ctx, "vol", "A"); err != nil {
				t.Fatal(err)
			}
			answer := waitingAcquire(ip.filed, "vol", "B")
			until(t, "tried again", func() bool { return st.Tries.Load() >= 3 })
			// Broken without an announcement.
			if err := st.Store.Unlock(ctx, "vol", "A", true); err != nil {
				t.Fatal(err)
			}
			granted(t, answer, "an unannounced release")
			until(t, "unsubscribed", func() bool { return st.Watchers() == 0 })
		})
	}
}
