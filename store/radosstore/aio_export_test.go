//go:build ceph

package radosstore

// SetDirectWait sets how few operations must be in flight for one to wait
// for its completion on a goroutine of its own rather than through the
// completion queue (default 0: never; 1: when it is alone). Call it
// before any operation.
func (s *Store) SetDirectWait(below int32) { s.comp.directBelow = below }
