package blocker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/storetest"
	"github.com/archipelago-go/archipelago/store/xsegstore"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// lockWait sends a LOCKWAIT of lock name (naming owner unless "") and
// returns where its answer will come.
func lockWait(f *filed, name, owner string) <-chan reply {
	answer := make(chan reply, 1)
	go func() {
		q := req{op: xseg.OpLockWait, target: name}
		if owner != "" {
			q.p = &wire.Lock{Owner: owner}
		}
		rep, err := f.send(context.Background(), q)
		if err != nil {
			rep.err = fmt.Errorf("transport: %w", err)
		}
		answer <- rep
	}()
	return answer
}

// answered returns the LOCKWAIT's answer, failing the test if none comes
// within answeredWithin of what (logged with the time it took).
func answered(t *testing.T, answer <-chan reply, what string) reply {
	t.Helper()
	start := time.Now()
	select {
	case rep := <-answer:
		t.Logf("LOCKWAIT answered %v after %s", time.Since(start), what)
		return rep
	case <-time.After(answeredWithin):
		t.Fatalf("LOCKWAIT not answered %v after %s", answeredWithin, what)
		return reply{}
	}
}

// stillFree checks that nobody holds lock name: LOCKWAIT never takes it.
// answeredAtRelease checks that the LOCKWAIT of lock "vol" whose answer
// comes on answer is not answered yet, releases A's hold of it on st, and
// checks that the LOCKWAIT is then answered with success and took nothing.
func answeredAtRelease(t *testing.T, st store.Locker, answer <-chan reply) {
	t.Helper()
	select {
	case rep := <-answer:
		t.Fatalf("LOCKWAIT of a held lock answered %v without waiting", rep.err)
	default:
	}
	if err := st.Unlock(context.Background(), "vol", "A", false); err != nil {
		t.Fatal(err)
	}
	if rep := answered(t, answer, "the release"); rep.err != nil {
		t.Fatalf("LOCKWAIT after the release: %v", rep.err)
	}
	stillFree(t, st, "vol")
}

func stillFree(t *testing.T, st store.Locker, name string) {
	t.Helper()
	if owner, err := st.LockOwner(context.Background(), name); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("lock %q is held by %q (%v) after LOCKWAIT, want free", name, owner, err)
	}
}

// slowBlocker serves from st with every pause a minute long, so that
// only an immediate answer or a wake-up answers sooner.
func slowBlocker(ip *inProcess, st store.Store) *blocker.Blocker {
	b := blocker.New(st, "test-ident")
	b.LockPoll, b.LockPollMax, b.LockWatchPollMax, b.LockWaitMax = time.Minute, time.Minute, time.Minute, time.Minute
	ip.h.b.Store(b)
	return b
}

// TestLockWait checks LOCKWAIT over a store that announces releases: a
// free lock, or one held by the owner the request names, is answered at
// once; a held one when it is released (announced), not at the next poll
// a minute away; and the lock is never taken.
func TestLockWait(t *testing.T) {
	st := storetest.NewAnnouncing()
	ip := startInProcess(t, memstore.New())
	slowBlocker(ip, st)
	ctx := t.Context()

	if rep := answered(t, lockWait(ip.filed, "vol", ""), "sending it for a free lock"); rep.err != nil {
		t.Fatalf("LOCKWAIT of a free lock: %v", rep.err)
	}
	stillFree(t, st, "vol")

	if err := st.TryLock(ctx, "vol", "A"); err != nil {
		t.Fatal(err)
	}
	if rep := answered(t, lockWait(ip.filed, "vol", "A"), "sending it for A's lock, naming A"); rep.err != nil {
		t.Fatalf("LOCKWAIT of a lock held by the owner it names: %v", rep.err)
	}

	answer := lockWait(ip.filed, "vol", "B")
	until(t, "subscribed", func() bool { return st.Watchers() == 1 })
	time.Sleep(10 * time.Millisecond) // let it check again after subscribing
	answeredAtRelease(t, st, answer)
	until(t, "unsubscribed", func() bool { return st.Watchers() == 0 })
	if st.Tries.Load() != 1 {
		t.Fatalf("%d TryLocks, want only the test's own", st.Tries.Load())
	}
}

// TestLockWaitBounded checks that a LOCKWAIT of a lock held all along is
// answered after LockWaitMax with ErrLocked naming the holder.
func TestLockWaitBounded(t *testing.T) {
	st := storetest.NewAnnouncing()
	ip := startInProcess(t, memstore.New())
	b := slowBlocker(ip, st)
	b.LockWaitMax = 50 * time.Millisecond
	if err := st.TryLock(t.Context(), "vol", "A"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep := answered(t, lockWait(ip.filed, "vol", "B"), "sending it")
	if !errors.Is(rep.err, errs.ErrLocked) {
		t.Fatalf("LOCKWAIT of a lock held all along: %v, want ErrLocked", rep.err)
	}
	if d := time.Since(start); d < b.LockWaitMax {
		t.Fatalf("LOCKWAIT answered %v after it was sent, before LockWaitMax %v", d, b.LockWaitMax)
	}
	if h := holder(t, rep); h != "A" {
		t.Fatalf("LOCKWAIT names %q as the holder, want A", h)
	}
	until(t, "unsubscribed", func() bool { return st.Watchers() == 0 })
}

// TestLockWaitPolls checks that over a store that does not announce
// releases LOCKWAIT finds a release by polling.
func TestLockWaitPolls(t *testing.T) {
	st := memstore.New()
	ip := startInProcess(t, memstore.New())
	b := slowBlocker(ip, st)
	b.LockPoll, b.LockPollMax = time.Millisecond, 10*time.Millisecond
	ctx := t.Context()
	if err := st.TryLock(ctx, "vol", "A"); err != nil {
		t.Fatal(err)
	}
	answer := lockWait(ip.filed, "vol", "")
	time.Sleep(50 * time.Millisecond)
	answeredAtRelease(t, st, answer)
}

// TestLockWaitThroughXsegstore checks xsegstore's WatchLock against this
// blocker through the segment: no wake-up while the lock stays held (the
// blocker answers "still held" every LockWaitMax, 20 ms), one soon after
// the release, announced by the blocker's store, although every poll and
// LockWaitMax are then a minute away.
func TestLockWaitThroughXsegstore(t *testing.T) {
	st := storetest.NewAnnouncing()
	ip := startInProcess(t, memstore.New())
	quick := blocker.New(st, "test-ident")
	quick.LockPoll, quick.LockPollMax, quick.LockWatchPollMax, quick.LockWaitMax = time.Minute, time.Minute, time.Minute, 20*time.Millisecond
	ip.h.b.Store(quick)
	xs := xsegstore.New(ip.c, filedPort)
	t.Cleanup(func() { xs.Close() })
	ctx := t.Context()

	if err := xs.TryLock(ctx, "vol", "A"); err != nil {
		t.Fatal(err)
	}
	wake, cancel, err := xs.WatchLock(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	select {
	case <-wake:
		t.Fatal("woken while the lock stayed held")
	case <-time.After(200 * time.Millisecond): // several LOCKWAITs
	}
	// From now on LOCKWAITs wait a minute: the one quick is serving ends
	// within 20 ms, and the next one is served by the slow blocker.
	slowBlocker(ip, st)
	time.Sleep(100 * time.Millisecond)
	until(t, "the slow blocker's LOCKWAIT subscribed", func() bool { return st.Watchers() == 1 })
	if err := st.Unlock(ctx, "vol", "A", false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case <-wake:
		t.Logf("woken %v after the release", time.Since(start))
	case <-time.After(answeredWithin):
		t.Fatalf("not woken %v after the release", answeredWithin)
	}
	if err := xs.TryLock(ctx, "vol", "B"); err != nil {
		t.Fatalf("TryLock after the wake-up: %v", err)
	}
	if err := xs.Unlock(ctx, "vol", "B", false); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The LOCKWAIT in flight, if any, is answered at B's release (or
	// found the lock free), and with it ends the blocker's subscription.
	until(t, "unsubscribed", func() bool { return st.Watchers() == 0 })
}
