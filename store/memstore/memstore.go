// Package memstore is an in-memory store.Store and store.Locker for unit
// tests that simulates crashes.
//
// In the manner of pebble's vfs.NewCrashableMem, a Store keeps two images:
// the volatile one that reads and writes see, and the durable one that would
// survive a power cut. A FUA write lands in both; every other change lands in
// the volatile image and reaches the durable one at the next Sync. Locks are
// durable at once. Crash returns a new Store that holds only the durable
// image: the smallest state a correct backend may show after a crash, so a
// test that passes against it relies on nothing the Store contract does not
// promise.
//
// Async is a Store that also starts reads and writes asynchronously
// (ReadAsync, WriteAsync, as radosstore does with librados' aio) and ends
// them on its own goroutines in shuffled order: the blocker's
// asynchronous path runs on it without Ceph.
package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// MaxObjectSize bounds an object of a memory store: a write or truncate past
// it fails with errs.ErrTooLarge instead of exhausting memory.
const MaxObjectSize = 1 << 30

var (
	_ store.Store  = (*Store)(nil)
	_ store.Locker = (*Store)(nil)
)

// Store is an in-memory object store with simulated durability. The zero
// value is not usable; call New.
type Store struct {
	// mu guards every field below. Methods hold it for their whole
	// operation (List drops it before calling fn).
	mu      sync.Mutex
	closed  bool
	objects map[string][]byte   // volatile image
	durable map[string][]byte   // durable image; never aliases objects
	dirty   map[string]struct{} // names whose volatile state differs from the durable one
	locks   map[string]string   // lock name -> owner; always durable
}

// New returns an empty store.
func New() *Store {
	return &Store{
		objects: make(map[string][]byte),
		durable: make(map[string][]byte),
		dirty:   make(map[string]struct{}),
		locks:   make(map[string]string),
	}
}

// Crash simulates a power cut: it returns a new Store holding only what was
// durable in s (FUA writes, everything synced, locks). s itself is left as it
// was and may be used or crashed again; it may even be closed.
func (s *Store) Crash() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := New()
	for name, data := range s.durable {
		c.objects[name] = slices.Clone(data)
		c.durable[name] = slices.Clone(data)
	}
	maps.Copy(c.locks, s.locks)
	return c
}

// begin checks ctx and name and takes s.mu. On success the caller must
// unlock s.mu.
func (s *Store) begin(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: %s %q: %w", op, name, err)
	}
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("memstore: %s: %w", op, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("memstore: %s %q: store closed: %w", op, name, errs.ErrShutdown)
	}
	return nil
}

func notFound(op, name string) error {
	return fmt.Errorf("memstore: %s object %q: %w", op, name, errs.ErrNotFound)
}

func checkSize(op, name string, size int64) error {
	if size > MaxObjectSize {
		return fmt.Errorf("memstore: %s object %q: size %d beyond %d: %w",
			op, name, size, MaxObjectSize, errs.ErrTooLarge)
	}
	return nil
}

// resize returns b with length n; bytes past the old length read as zeros
// even when b's capacity held older data.
func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n]
	}
	if n <= cap(b) {
		old := len(b)
		b = b[:n]
		clear(b[old:])
		return b
	}
	return append(b, make([]byte, n-len(b))...)
}

// writeAt writes p at off into b, growing it as needed.
func writeAt(b, p []byte, off int64) []byte {
	if end := int(off) + len(p); end > len(b) {
		b = resize(b, end)
	}
	copy(b[off:], p)
	return b
}

// ReadAt implements store.Store.
func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := s.begin(ctx, "read", name); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if err := store.ValidRange(off, len(p)); err != nil {
		return 0, fmt.Errorf("memstore: read object %q: %w", name, err)
	}
	data, ok := s.objects[name]
	if !ok {
		return 0, notFound("read", name)
	}
	if off >= int64(len(data)) {
		return 0, nil
	}
	return copy(p, data[off:]), nil
}

// WriteAt implements store.Store.
func (s *Store) WriteAt(ctx context.Context, name string, p []byte, off int64, fua bool) error {
	if err := s.begin(ctx, "write", name); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if err := store.ValidRange(off, len(p)); err != nil {
		return fmt.Errorf("memstore: write object %q: %w", name, err)
	}
	end := off + int64(len(p))
	if len(p) == 0 {
		end = 0 // an empty write creates the object but never grows it
	}
	if err := checkSize("write", name, end); err != nil {
		return err
	}
	data, ok := s.objects[name]
	if !ok {
		data = []byte{}
	}
	if len(p) > 0 {
		data = writeAt(data, p, off)
	}
	s.objects[name] = data
	s.dirty[name] = struct{}{}
	if fua {
		// Only these bytes and the object's existence become durable;
		// other unsynced changes of the object stay volatile.
		d, ok := s.durable[name]
		if !ok {
			d = []byte{}
		}
		if len(p) > 0 {
			d = writeAt(d, p, off)
		}
		s.durable[name] = d
	}
	return nil
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := s.begin(ctx, "stat", name); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	data, ok := s.objects[name]
	if !ok {
		return 0, notFound("stat", name)
	}
	return int64(len(data)), nil
}

// Truncate implements store.Store.
func (s *Store) Truncate(ctx context.Context, name string, size int64) error {
	if err := s.begin(ctx, "truncate", name); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if size < 0 {
		return fmt.Errorf("memstore: truncate object %q to %d: %w", name, size, errs.ErrInvalid)
	}
	if err := checkSize("truncate", name, size); err != nil {
		return err
	}
	data, ok := s.objects[name]
	if !ok {
		return notFound("truncate", name)
	}
	s.objects[name] = resize(data, int(size))
	s.dirty[name] = struct{}{}
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.begin(ctx, "delete", name); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.objects[name]; !ok {
		return notFound("delete", name)
	}
	delete(s.objects, name)
	s.dirty[name] = struct{}{}
	return nil
}

// Copy implements store.Store.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	if err := store.ValidName(dst); err != nil {
		return fmt.Errorf("memstore: copy to: %w", err)
	}
	if err := s.begin(ctx, "copy", src); err != nil {
		return err
	}
	defer s.mu.Unlock()
	data, ok := s.objects[src]
	if !ok {
		return notFound("copy", src)
	}
	if src == dst {
		return nil
	}
	s.objects[dst] = slices.Clone(data)
	s.dirty[dst] = struct{}{}
	return nil
}

// Sync implements store.Store.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: sync: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memstore: sync: store closed: %w", errs.ErrShutdown)
	}
	for name := range s.dirty {
		if data, ok := s.objects[name]; ok {
			s.durable[name] = slices.Clone(data)
		} else {
			delete(s.durable, name)
		}
	}
	clear(s.dirty)
	return nil
}

// List implements store.Store. It calls fn without holding the store's
// mutex, so fn may use the store.
func (s *Store) List(ctx context.Context, prefix string, fn func(name string) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: list %q: %w", prefix, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("memstore: list %q: store closed: %w", prefix, errs.ErrShutdown)
	}
	var names []string
	for name := range s.objects {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	s.mu.Unlock()
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: list %q: %w", prefix, err)
		}
		if err := fn(name); err != nil {
			return err
		}
	}
	return nil
}

// Close implements store.Store. The images stay, so Crash still works.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// TryLock implements store.Locker.
func (s *Store) TryLock(ctx context.Context, name, owner string) error {
	if err := store.ValidOwner(owner); err != nil {
		return fmt.Errorf("memstore: lock %q: %w", name, err)
	}
	if err := s.begin(ctx, "lock", name); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if held, ok := s.locks[name]; ok && held != owner {
		return fmt.Errorf("memstore: %w", &store.LockedError{Name: name, Owner: held})
	}
	s.locks[name] = owner
	return nil
}

// Unlock implements store.Locker.
func (s *Store) Unlock(ctx context.Context, name, owner string, force bool) error {
	if err := store.ValidOwner(owner); err != nil {
		return fmt.Errorf("memstore: unlock %q: %w", name, err)
	}
	if err := s.begin(ctx, "unlock", name); err != nil {
		return err
	}
	defer s.mu.Unlock()
	held, ok := s.locks[name]
	if !ok {
		return fmt.Errorf("memstore: unlock %q: lock %w", name, errs.ErrNotFound)
	}
	if held != owner && !force {
		return fmt.Errorf("memstore: unlock %q by %q: held by %q: %w", name, owner, held, errs.ErrNotOwner)
	}
	delete(s.locks, name)
	return nil
}

// LockOwner implements store.Locker.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	if err := s.begin(ctx, "lock owner", name); err != nil {
		return "", err
	}
	defer s.mu.Unlock()
	held, ok := s.locks[name]
	if !ok {
		return "", fmt.Errorf("memstore: lock %q: %w", name, errs.ErrNotFound)
	}
	return held, nil
}
