package xsegstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/xseg"
)

// Waiting for a lock without polling through the segment: WatchLock keeps
// a LOCKWAIT request in flight at the blocker, which answers it when the
// lock is free (a release announced by its store, or found by its own
// polling) or, still held, after its LockWaitMax (2 s by default). A
// LOCKWAIT takes nothing: a subscriber that gave up leaves no lock behind,
// only a request the blocker answers within that bound.

var _ store.LockWatcher = (*Store)(nil)

const (
	// DefaultMaxLockWaits is MaxLockWaits unless set. Each watched lock
	// holds a LOCKWAIT in the blocker's nr_ops (64 by default).
	DefaultMaxLockWaits = 16
	// lockWaitTimeout bounds one LOCKWAIT round trip. The blocker answers
	// within its LockWaitMax; a blocker that does not is given up on and
	// asked again (its late answer is dropped).
	lockWaitTimeout = 30 * time.Second
	// gapMin and gapMax bound the pause before the next LOCKWAIT after
	// one that woke the subscribers (the lock was free, or the request
	// failed) while some still wait: the lock may be free and wanted by
	// none of them, and a LOCKWAIT would then answer at once, again and
	// again. The pause doubles while that goes on; after a LOCKWAIT that
	// found the lock held to the end the next one follows gapMin later.
	gapMin, gapMax = time.Millisecond, 100 * time.Millisecond
)

// lockWaits are a Store's watched locks.
type lockWaits struct {
	mu    sync.Mutex
	names map[string]*lockWaiter
	// unsupported: the blocker answered a LOCKWAIT with ErrNotSupported
	// (an older blocker). Later WatchLocks fail, so that their callers
	// poll; the subscriptions in place are woken at the gap pace.
	unsupported bool
}

// lockWaiter is one watched lock: its subscribers and the goroutine
// (runLockWait) that keeps one LOCKWAIT in flight for all of them. It
// ends, and leaves names, when it finds no subscriber left.
type lockWaiter struct {
	subs map[chan struct{}]struct{}
}

// WatchLock implements store.LockWatcher with LOCKWAIT requests: one
// goroutine per watched lock name, shared by its subscribers, keeps one in
// flight and wakes the subscribers when it is answered with the lock free
// (or when it fails: the subscriber's next TryLock says why). ctx only
// guards the call itself; the subscription lasts until cancel. After
// cancel the goroutine ends when the LOCKWAIT in flight is answered (at
// most the blocker's LockWaitMax later), unless the name is subscribed to
// again meanwhile.
//
// It fails with errs.ErrBusy when MaxLockWaits locks are watched already,
// and with errs.ErrNotSupported once the blocker has answered a LOCKWAIT
// so (a blocker that predates it): the caller then polls.
func (s *Store) WatchLock(ctx context.Context, name string) (<-chan struct{}, func(), error) {
	if err := checkName(name); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("watch lock %q: %w", name, err)
	}
	lw := &s.lw
	lw.mu.Lock()
	defer lw.mu.Unlock()
	// Under lw.mu: Close sets closed, then wakes the subscribers under it.
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("watch lock %q: store closed: %w", name, errs.ErrShutdown)
	}
	if lw.unsupported {
		return nil, nil, fmt.Errorf("watch lock %q: the blocker at port %d does not serve %s: %w",
			name, s.port, xseg.OpLockWait, errs.ErrNotSupported)
	}
	w := lw.names[name]
	if w == nil {
		limit := s.MaxLockWaits
		if limit <= 0 {
			limit = DefaultMaxLockWaits
		}
		if len(lw.names) >= limit {
			return nil, nil, fmt.Errorf("watch lock %q: %d locks watched already at port %d: %w",
				name, len(lw.names), s.port, errs.ErrBusy)
		}
		if lw.names == nil {
			lw.names = make(map[string]*lockWaiter)
		}
		w = &lockWaiter{subs: make(map[chan struct{}]struct{})}
		lw.names[name] = w
		go s.runLockWait(name, w)
	}
	wake := make(chan struct{}, 1)
	w.subs[wake] = struct{}{}
	return wake, sync.OnceFunc(func() {
		lw.mu.Lock()
		delete(w.subs, wake)
		lw.mu.Unlock()
	}), nil
}

// runLockWait keeps a LOCKWAIT of lock name in flight while w has
// subscribers, and wakes them when one is answered with the lock free or
// fails.
func (s *Store) runLockWait(name string, w *lockWaiter) {
	lw := &s.lw
	var gap time.Duration
	for {
		lw.mu.Lock()
		if len(w.subs) == 0 || s.closed.Load() {
			delete(lw.names, name)
			lw.mu.Unlock()
			return
		}
		unsupported := lw.unsupported
		lw.mu.Unlock()

		freed, err := true, error(nil)
		if !unsupported {
			freed, err = s.lockWait(name)
		}
		if errors.Is(err, errs.ErrNotSupported) {
			lw.mu.Lock()
			lw.unsupported = true
			lw.mu.Unlock()
		}
		if !freed && err == nil {
			// Held all along: ask again, after a breath in case the
			// blocker answers at once (a release meanwhile is not missed:
			// the next LOCKWAIT finds the lock free).
			gap = 0
			pause(s.life, gapMin)
			continue
		}
		lw.mu.Lock()
		w.wake()
		lw.mu.Unlock()
		gap = min(max(2*gap, gapMin), gapMax)
		pause(s.life, gap)
	}
}

// pause sleeps for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// lockWait sends one LOCKWAIT of lock name: freed is true when the blocker
// answered that the lock is free, false when it is still held after the
// blocker's bound.
func (s *Store) lockWait(name string) (freed bool, err error) {
	ctx, cancel := context.WithTimeout(s.life, lockWaitTimeout) // Close ends it
	defer cancel()
	err = s.do(ctx, xseg.OpLockWait, name, 2048, nil, func(r *xseg.Request) error {
		freed = r.Err() == nil
		return nil
	})
	return freed, err
}

// wakeAll wakes every subscriber (at Close: their next TryLock fails with
// ErrShutdown).
func (lw *lockWaits) wakeAll() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for _, w := range lw.names {
		w.wake()
	}
}

// wake wakes w's subscribers that are not awake yet. lockWaits.mu held.
func (w *lockWaiter) wake() {
	for c := range w.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
