package store

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/archipelago-go/archipelago/errs"
)

// MaxNameLen is the longest object, lock or owner name in bytes.
const MaxNameLen = 255

// Store is a flat namespace of named byte objects. All methods are safe for
// concurrent use. Every method returns the context's error (wrapped) if ctx
// is done before the operation starts. After Close, every method returns an
// error wrapping errs.ErrShutdown; Close itself may be called again and then
// returns nil. Close does not Sync.
type Store interface {
	// ReadAt reads up to len(p) bytes of object name starting at off into
	// p and returns how many bytes came from the object: n < len(p) when
	// the object ends before off+len(p) (p[n:] is left untouched; the
	// caller zero-fills). Errors: ErrNotFound if the object does not
	// exist; ErrInvalid for off < 0 or a bad name.
	ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error)

	// WriteAt writes p at off, creating the object if it does not exist; a
	// gap before off reads as zeros. A write of no bytes creates a missing
	// object (of size 0) and leaves an existing one as it is. If fua is
	// true, the data and the object's existence are on stable storage when
	// WriteAt returns. Otherwise they are durable after the next successful
	// Sync. Errors: ErrInvalid for off < 0, off+len(p) overflowing int64 or
	// a bad name.
	WriteAt(ctx context.Context, name string, p []byte, off int64, fua bool) error

	// Stat returns the object's size. ErrNotFound if missing.
	Stat(ctx context.Context, name string) (int64, error)

	// Truncate sets the object's size (grow reads zeros). ErrNotFound if
	// missing; ErrInvalid if size < 0.
	Truncate(ctx context.Context, name string, size int64) error

	// Delete removes the object. ErrNotFound if missing.
	Delete(ctx context.Context, name string) error

	// Copy makes dst a copy of src (replacing dst atomically if it exists:
	// a reader sees old or new content, never a mix). ErrNotFound if src is
	// missing. Durable like a non-FUA write (after Sync).
	Copy(ctx context.Context, src, dst string) error

	// Sync makes every write, copy, truncate and delete that completed
	// before Sync was called durable.
	Sync(ctx context.Context) error

	// List calls fn for every object whose name starts with prefix, in no
	// particular order; fn returning an error stops the walk and List
	// returns that error. Objects created or deleted during List may or
	// may not be seen. fn may call the store. Lock objects are not listed.
	List(ctx context.Context, prefix string, fn func(name string) error) error

	// Close releases the store's resources.
	Close() error
}

// Locker is the optional ability to hold persistent, storage-based locks
// (they survive the crash of the process that took them). Lock names follow
// the rules of object names but live in their own namespace.
type Locker interface {
	// TryLock takes lock name for owner, once, without waiting. Nil if
	// taken now or already held by the same owner (re-entrant). If held by
	// another owner: an error that is a *LockedError (errors.As) and
	// errors.Is(err, errs.ErrLocked). The lock is durable when TryLock
	// returns.
	TryLock(ctx context.Context, name, owner string) error

	// Unlock releases lock name. ErrNotFound if not held by anyone. If held
	// by another owner: ErrNotOwner unless force (force breaks it). The
	// release is durable when Unlock returns.
	Unlock(ctx context.Context, name, owner string, force bool) error

	// LockOwner returns the owner of lock name, ErrNotFound if free.
	LockOwner(ctx context.Context, name string) (string, error)
}

// LockWatcher is the optional ability of a Locker to tell a waiter that a
// lock may have been released, so that waiting for a lock needs no tight
// polling. A wake-up is a hint, not a grant: it may be spurious (the lock
// was taken again at once, or the store lost track of releases and wakes
// every waiter), and a release may go unannounced (a notification lost, or
// the lock broken by a client that does not announce): a waiter retries
// TryLock when woken and, less often, on its own.
type LockWatcher interface {
	// WatchLock subscribes to the releases of lock name by any client of
	// the storage, other processes and hosts included: every Unlock of
	// name (forced or not) that completes after WatchLock returned sends
	// on wake soon after, in milliseconds, unless its announcement is
	// lost (see above). wake has a buffer of one:
	// wake-ups not yet received merge into one. The order that misses no
	// release is WatchLock, TryLock, then wait on wake and TryLock again.
	// cancel ends the subscription; it may be called more than once and
	// does not close wake. Close wakes every subscriber (their next
	// TryLock fails with ErrShutdown). The error is the store's (the
	// context's, ErrShutdown after Close, ErrInvalid for a bad name) or
	// says why the store cannot watch now: the caller then just polls.
	WatchLock(ctx context.Context, name string) (wake <-chan struct{}, cancel func(), err error)
}

// LockedError reports a lock held by another owner. errors.Is(err,
// errs.ErrLocked) holds for it.
type LockedError struct {
	Name  string // the lock
	Owner string // its current holder
}

// Error returns `lock "NAME" held by "OWNER"`.
func (e *LockedError) Error() string {
	return fmt.Sprintf("lock %q held by %q", e.Name, e.Owner)
}

// Unwrap returns errs.ErrLocked.
func (e *LockedError) Unwrap() error { return errs.ErrLocked }

// LockHolder returns the owner (errs.LockHolder).
func (e *LockedError) LockHolder() string { return e.Owner }

// ValidName checks an object or lock name: 1 to MaxNameLen bytes, no '/',
// no NUL byte, not "." or "..". The error wraps errs.ErrInvalid.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty object name: %w", errs.ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("object name %.40q... is %d bytes, longer than %d: %w",
			name, len(name), MaxNameLen, errs.ErrInvalid)
	case name == "." || name == "..":
		return fmt.Errorf("object name %q is reserved: %w", name, errs.ErrInvalid)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("object name %q holds '/' or NUL: %w", name, errs.ErrInvalid)
	}
	return nil
}

// ValidOwner checks a lock owner: 1 to MaxNameLen bytes, no NUL, no newline.
// The error wraps errs.ErrInvalid.
func ValidOwner(owner string) error {
	switch {
	case owner == "":
		return fmt.Errorf("empty lock owner: %w", errs.ErrInvalid)
	case len(owner) > MaxNameLen:
		return fmt.Errorf("lock owner %.40q... is %d bytes, longer than %d: %w",
			owner, len(owner), MaxNameLen, errs.ErrInvalid)
	case strings.ContainsAny(owner, "\n\x00"):
		return fmt.Errorf("lock owner %q holds a newline or NUL: %w", owner, errs.ErrInvalid)
	}
	return nil
}

// ValidRange checks the range of an I/O of n bytes at off: off >= 0 and
// off+n fits in an int64. The error wraps errs.ErrInvalid.
func ValidRange(off int64, n int) error {
	if off < 0 {
		return fmt.Errorf("negative offset %d: %w", off, errs.ErrInvalid)
	}
	if n < 0 || int64(n) > math.MaxInt64-off {
		return fmt.Errorf("range of %d bytes at %d overflows: %w", n, off, errs.ErrInvalid)
	}
	return nil
}
