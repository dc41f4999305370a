package xsegstore

// LockWaits is the number of locks watched: of runLockWait goroutines,
// each with at most one LOCKWAIT in flight.
func (s *Store) LockWaits() int {
	s.lw.mu.Lock()
	defer s.lw.mu.Unlock()
	return len(s.lw.names)
}
