package blocker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/xseg"
	"github.com/archipelago-go/archipelago/xseg/payload"
)

// answeredWithin is how long a waiting ACQUIRE may take to be answered
// after the release before the test calls it not answered at all; it is
// no latency bound (the time is logged). The tests that use it set the
// blocker's polling to a minute, so that only a wake-up can answer sooner.
const answeredWithin = 10 * time.Second

// announcing is a memstore that announces lock releases (store.LockWatcher)
// as radosstore does across clients: its Unlock wakes WatchLock's
// subscribers of the lock. Unlocks of the embedded memstore are not
// announced, like a lock broken by a client that does not announce. It
// counts TryLocks and subscriptions.
type announcing struct {
	*memstore.Store
	tries    atomic.Int32
	watchErr error // WatchLock fails with it, if set

	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	n    int
}

var _ store.LockWatcher = (*announcing)(nil)

func newAnnouncing() *announcing {
	return &announcing{Store: memstore.New(), subs: make(map[string]map[chan struct{}]struct{})}
}

func (s *announcing) TryLock(ctx context.Context, name, owner string) error {
	s.tries.Add(1)
	return s.Store.TryLock(ctx, name, owner)
}

func (s *announcing) Unlock(ctx context.Context, name, owner string, force bool) error {
	err := s.Store.Unlock(ctx, name, owner, force)
	if err == nil {
		s.mu.Lock()
		for c := range s.subs[name] {
			select {
			case c <- struct{}{}:
			default:
			}
		}
		s.mu.Unlock()
	}
	return err
}

func (s *announcing) WatchLock(ctx context.Context, name string) (<-chan struct{}, func(), error) {
	if s.watchErr != nil {
		return nil, nil, s.watchErr
	}
	c := make(chan struct{}, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[name] == nil {
		s.subs[name] = make(map[chan struct{}]struct{})
	}
	s.subs[name][c] = struct{}{}
	s.n++
	return c, sync.OnceFunc(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs[name], c)
		s.n--
	}), nil
}

func (s *announcing) watchers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// waitingAcquire sends an ACQUIRE of lock name for owner, which waits, and
// returns where its answer will come.
func waitingAcquire(f *filed, name, owner string) <-chan reply {
	answer := make(chan reply, 1)
	go func() {
		rep, err := f.send(context.Background(), req{op: xseg.OpAcquire, target: name, p: &payload.Lock{Owner: owner}})
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
	deadline := time.Now().Add(answeredWithin)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %v", what, answeredWithin)
		}
		time.Sleep(time.Millisecond)
	}
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
	st := newAnnouncing()
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
	until(t, "subscribed and tried twice", func() bool { return st.watchers() == 1 && st.tries.Load() >= 3 })
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
	until(t, "unsubscribed", func() bool { return st.watchers() == 0 })

	// A wake-up that finds the lock taken again waits on.
	answer = waitingAcquire(ip.filed, "vol", "C")
	until(t, "subscribed", func() bool { return st.watchers() == 1 })
	tries := st.tries.Load()
	if err := st.Unlock(ctx, "vol", "B", false); err != nil {
		t.Fatal(err)
	}
	if err := st.TryLock(ctx, "vol", "D"); err != nil {
		// The waiter was quicker; nothing more to see.
		granted(t, answer, "the release")
		return
	}
	until(t, "retried after the wake-up", func() bool { return st.tries.Load() >= tries+2 })
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
			st := newAnnouncing()
			st.watchErr = c.watchErr
			ip := startInProcess(t, memstore.New())
			b := blocker.New(st, "test-ident")
			b.LockPoll, b.LockPollMax, b.LockWatchPollMax = time.Millisecond, 10*time.Millisecond, 20*time.Millisecond
			ip.h.b.Store(b)
			ctx := t.Context()
			if err := st.TryLock(ctx, "vol", "A"); err != nil {
				t.Fatal(err)
			}
			answer := waitingAcquire(ip.filed, "vol", "B")
			until(t, "tried again", func() bool { return st.tries.Load() >= 3 })
			// Broken without an announcement.
			if err := st.Store.Unlock(ctx, "vol", "A", true); err != nil {
				t.Fatal(err)
			}
			granted(t, answer, "an unannounced release")
			until(t, "unsubscribed", func() bool { return st.watchers() == 0 })
		})
	}
}
