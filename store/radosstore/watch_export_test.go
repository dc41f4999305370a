//go:build ceph

package radosstore

import (
	"syscall"
	"time"
)

// SetWatchIdle sets how long s keeps its watch of lock releases after the
// last waiter left; call it before the first WatchLock.
func (s *Store) SetWatchIdle(d time.Duration) {
	s.lw.mu.Lock()
	defer s.lw.mu.Unlock()
	s.lw.watchIdle = d
}

// ReleaseWatchers counts the watches of the lock namespace's release object,
// acknowledging or not, by notifying it with no lock name (which wakes
// every waiter, harmlessly). A missing object has none.
func (s *Store) ReleaseWatchers() (int, error) {
	acks, timeouts, err := s.lio.NotifyWithTimeout(releaseObject, nil, time.Second)
	switch code := errno(err); {
	case code == -int(syscall.ENOENT):
		return 0, nil
	case err != nil && code != -int(syscall.ETIMEDOUT):
		return 0, opErr("notify", releaseObject, err)
	}
	return len(acks) + len(timeouts), nil
}

// RemoveReleaseObject deletes the release object of the lock namespace,
// which the tests' cleanup does not list (its name holds a '/').
func (s *Store) RemoveReleaseObject() error {
	err := s.lio.Delete(releaseObject)
	if errno(err) == -int(syscall.ENOENT) {
		return nil
	}
	return opErr("delete", releaseObject, err)
}
