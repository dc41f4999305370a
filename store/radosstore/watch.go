//go:build ceph

package radosstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Waiting for a lock without polling: RADOS watch/notify on one object per
// lock namespace, releaseObject. Lock objects themselves are not watched:
// Unlock deletes them, a watch of a missing object fails, and a deletion
// notifies nobody. Instead every successful Unlock notifies releaseObject
// with the lock's name, after the removal and in the background; a Store
// with waiters holds one watch of releaseObject and wakes those of its
// WatchLock subscribers that wait for that name.

var _ store.LockWatcher = (*Store)(nil)

// releaseObject is the object of the lock namespace that waiters watch and
// Unlock notifies. Its name holds a '/', which no lock name can
// (store.ValidName), so it is never taken for a lock.
const releaseObject = "archipelago/lock-releases"

const (
	// notifyTimeout bounds how long an Unlock's notification (in the
	// background: Unlock does not wait for it) waits for the watchers'
	// acks. Live watchers ack at once; the watch of a client that died
	// lingers until its OSD drops it (osd_client_watch_timeout, 30 s),
	// and its ack never comes. Close waits for notifications in flight.
	notifyTimeout = time.Second
	// defaultWatchIdle is how long the watch outlives its last
	// subscriber, so that a blocker whose waits come one after another
	// does not unwatch and watch again in between.
	defaultWatchIdle = 30 * time.Second
	// rewatchMin and rewatchMax bound the pause before watching again
	// after the watch broke or could not be set up; it doubles while the
	// attempts fail.
	rewatchMin, rewatchMax = 100 * time.Millisecond, 5 * time.Second
)

// lockWatch is a Store's watch of releaseObject, shared by every WatchLock
// subscriber of the Store: one RADOS watch however many requests wait. The
// first subscriber starts runWatch, which sets the watch up; runWatch
// deletes it watchIdle after the last subscriber left, or at Close. The
// zero value is ready to use.
type lockWatch struct {
	mu      sync.Mutex
	subs    map[string]map[chan struct{}]struct{} // subscribers by lock name
	n       int                                   // subscribers
	running bool                                  // runWatch runs
	try     *attempt                              // runWatch's current or last attempt to watch
	idle    chan struct{}                         // buffer 1: n fell to 0
	stop    chan struct{}                         // closed by close
	closed  bool
	// watchIdle is defaultWatchIdle unless a test set it.
	watchIdle time.Duration
}

// attempt is one try of runWatch to set the watch up: done is closed when
// it ended, err then says how.
type attempt struct {
	done chan struct{}
	err  error
}

// WatchLock implements store.LockWatcher. The first subscriber of a Store
// sets up its watch of releaseObject (a round trip or two to the OSD);
// later ones share it. While the watch is broken, WatchLock still
// subscribes (waiters are all woken once it is back, since releases may
// have gone unannounced meanwhile), but if the last attempt to watch
// failed it returns that error.
func (s *Store) WatchLock(ctx context.Context, name string) (<-chan struct{}, func(), error) {
	if err := s.enterName(ctx, "watch lock", name); err != nil {
		return nil, nil, err
	}
	defer s.ops.Done()
	lw := &s.lw
	wake := make(chan struct{}, 1)
	lw.mu.Lock()
	if lw.closed {
		lw.mu.Unlock()
		return nil, nil, fmt.Errorf("radosstore: watch lock %q: store closed: %w", name, errs.ErrShutdown)
	}
	if lw.subs == nil {
		lw.subs = make(map[string]map[chan struct{}]struct{})
		lw.idle = make(chan struct{}, 1)
		lw.stop = make(chan struct{})
	}
	if lw.subs[name] == nil {
		lw.subs[name] = make(map[chan struct{}]struct{})
	}
	lw.subs[name][wake] = struct{}{}
	lw.n++
	if !lw.running {
		lw.running = true
		lw.try = &attempt{done: make(chan struct{})}
		s.ops.Add(1) // for runWatch; this call is a member of ops
		go s.runWatch(lw.try)
	}
	a := lw.try
	lw.mu.Unlock()
	cancel := sync.OnceFunc(func() { lw.unsubscribe(name, wake) })
	select {
	case <-a.done:
	case <-ctx.Done():
		cancel()
		return nil, nil, fmt.Errorf("radosstore: watch lock %q: %w", name, ctx.Err())
	}
	if a.err != nil {
		cancel()
		return nil, nil, fmt.Errorf("radosstore: watch lock %q: %w", name, a.err)
	}
	return wake, cancel, nil
}

// unsubscribe removes subscriber wake of lock name.
func (lw *lockWatch) unsubscribe(name string, wake chan struct{}) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	delete(lw.subs[name], wake)
	if len(lw.subs[name]) == 0 {
		delete(lw.subs, name)
	}
	lw.n--
	if lw.n == 0 {
		select {
		case lw.idle <- struct{}{}:
		default:
		}
	}
}

// wake wakes the subscribers of lock name, or all of them if name is no
// lock name (a notification of another form).
func (lw *lockWatch) wake(name string) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if store.ValidName(name) != nil {
		lw.wakeAllLocked()
		return
	}
	for c := range lw.subs[name] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// wakeAll wakes every subscriber.
func (lw *lockWatch) wakeAll() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.wakeAllLocked()
}

func (lw *lockWatch) wakeAllLocked() {
	for _, subs := range lw.subs {
		for c := range subs {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
}

// close stops runWatch, which then deletes the watch, and wakes every
// subscriber. Store.Close calls it before it waits for the operations.
func (lw *lockWatch) close() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return
	}
	lw.closed = true
	if lw.stop != nil {
		close(lw.stop)
	}
	lw.wakeAllLocked()
}

// runWatch keeps the Store's watch of releaseObject up while it has
// subscribers, starting with attempt a, and ends (deleting the watch) when
// it has had none for watchIdle, or when the store closes, or when an
// attempt to watch failed and nobody subscribes any more. It runs as a
// member of s.ops, so the RADOS handles outlive the watch.
func (s *Store) runWatch(a *attempt) {
	defer s.ops.Done()
	lw := &s.lw
	pause := rewatchMin
	for again := false; ; again = true {
		w, err := s.watchReleases()
		a.err = err
		close(a.done)
		if err == nil {
			if again {
				// Releases may have gone unannounced while the watch
				// was down.
				lw.wakeAll()
			}
			began := time.Now()
			err = s.serveWatch(w)
			s.unwatch(w)
			if err == nil {
				return // idle or closed
			}
			s.log.Warn("radosstore: the watch of lock releases broke; watching again (waiters poll meanwhile)",
				"object", releaseObject, "err", err)
			if time.Since(began) >= rewatchMax {
				pause = rewatchMin
			}
		} else {
			s.log.Warn("radosstore: cannot watch lock releases: waiters poll", "err", err)
		}
		select {
		case <-lw.stop:
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, rewatchMax)
		lw.mu.Lock()
		if lw.closed || lw.n == 0 {
			lw.running = false
			lw.mu.Unlock()
			return
		}
		a = &attempt{done: make(chan struct{})}
		lw.try = a
		lw.mu.Unlock()
	}
}

// watchReleases watches releaseObject, creating it first if it is missing.
func (s *Store) watchReleases() (*rados.Watcher, error) {
	w, err := s.lio.Watch(releaseObject)
	if errno(err) == -int(syscall.ENOENT) {
		if err := s.lio.Create(releaseObject, rados.CreateIdempotent); err != nil {
			return nil, opErr("create", releaseObject, err)
		}
		w, err = s.lio.Watch(releaseObject)
	}
	if err != nil {
		return nil, opErr("watch", releaseObject, err)
	}
	return w, nil
}

// serveWatch acks the notifications of w and wakes their subscribers. It
// returns the watch's error if it broke, and nil when the store closes or
// the watch has had no subscriber for watchIdle (then it has marked
// runWatch as ended, so that the next subscriber starts another).
func (s *Store) serveWatch(w *rados.Watcher) error {
	lw := &s.lw
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	lw.mu.Lock()
	after := lw.watchIdle
	lw.mu.Unlock()
	if after <= 0 {
		after = defaultWatchIdle
	}
	for {
		select {
		case ev := <-w.Events():
			// Wake (without blocking), then ack at once: the
			// notifier waits for every watcher's ack, and once it
			// has them the waiters are awake.
			lw.wake(string(ev.Data))
			if err := ev.Ack(nil); err != nil {
				s.log.Debug("radosstore: acking a lock release", "object", releaseObject, "err", err)
			}
		case err := <-w.Errors():
			if err == nil {
				err = errors.New("watch error without a code")
			}
			return opErr("watch", releaseObject, err)
		case <-lw.idle:
			idle.Reset(after)
		case <-idle.C:
			lw.mu.Lock()
			if lw.n == 0 {
				lw.running = false
				lw.mu.Unlock()
				return nil
			}
			lw.mu.Unlock()
		case <-lw.stop:
			return nil
		}
	}
}

// unwatch deletes watch w. go-ceph hands each event to an unbuffered
// channel from librados' callback thread; one being handed while the
// watch is deleted would hang that thread if nobody received it, so the
// channels are drained meanwhile (the events are dropped: whoever still
// waits is woken by the next watch or polls).
func (s *Store) unwatch(w *rados.Watcher) {
	done := make(chan struct{})
	go func() {
		evs, errc := w.Events(), w.Errors()
		for evs != nil || errc != nil {
			select {
			case _, ok := <-evs:
				if !ok {
					evs = nil
				}
			case _, ok := <-errc:
				if !ok {
					errc = nil
				}
			case <-done:
				return
			}
		}
	}()
	if err := w.Delete(); err != nil {
		// go-ceph closes the channels only if the unwatch succeeded,
		// but has already forgotten the watch, so no new callback
		// comes; drain one that may be on its way, then stop.
		s.log.Debug("radosstore: unwatching lock releases", "object", releaseObject, "err", err)
		time.AfterFunc(time.Second, func() { close(done) })
	}
}

// announceRelease tells the watchers of releaseObject that lock name was
// released, in the background, so that Unlock does not wait for their
// acks. The caller must be a member of s.ops.
func (s *Store) announceRelease(name string) {
	s.ops.Add(1)
	go func() {
		defer s.ops.Done()
		_, timeouts, err := s.lio.NotifyWithTimeout(releaseObject, []byte(name), notifyTimeout)
		switch code := errno(err); {
		case err == nil, code == -int(syscall.ENOENT):
			// Announced, or nobody ever waited in this namespace.
		case code == -int(syscall.ETIMEDOUT):
			// Delivered, but some watcher did not ack in time (the
			// lingering watch of a client that died, say).
			s.log.Debug("radosstore: lock release announced, not acknowledged by every watcher",
				"lock", name, "unacknowledged", len(timeouts))
		default:
			s.log.Warn("radosstore: announcing a lock release failed: its waiters find it by polling",
				"lock", name, "object", releaseObject, "err", mapErr(err))
		}
	}()
}
