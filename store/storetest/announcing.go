package storetest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// Announcing is a memstore that announces lock releases
// (store.LockWatcher) as radosstore and xsegstore do across clients: its
// Unlock wakes WatchLock's subscribers of the lock. Unlocks of the
// embedded memstore are not announced, like a lock broken by a client
// that does not announce. It counts TryLocks and subscriptions, for tests
// of lock waiters.
type Announcing struct {
	*memstore.Store
	Tries    atomic.Int32 // TryLock calls
	WatchErr error        // WatchLock fails with it, if set

	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	n    int
}

var _ store.LockWatcher = (*Announcing)(nil)

// NewAnnouncing returns an empty Announcing store.
func NewAnnouncing() *Announcing {
	return &Announcing{Store: memstore.New(), subs: make(map[string]map[chan struct{}]struct{})}
}

// TryLock counts the call and takes the lock.
func (s *Announcing) TryLock(ctx context.Context, name, owner string) error {
	s.Tries.Add(1)
	return s.Store.TryLock(ctx, name, owner)
}

// Unlock releases the lock and wakes its subscribers.
func (s *Announcing) Unlock(ctx context.Context, name, owner string, force bool) error {
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

// WatchLock implements store.LockWatcher.
func (s *Announcing) WatchLock(ctx context.Context, name string) (<-chan struct{}, func(), error) {
	if s.WatchErr != nil {
		return nil, nil, s.WatchErr
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

// Watchers is the number of subscriptions not cancelled.
func (s *Announcing) Watchers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}
