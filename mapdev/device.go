package mapdev

import (
	"context"
	"errors"
	"syscall"

	"github.com/archipelago-go/archipelago/errs"
)

// Device is the byte range a mapped file serves. Every method may be
// called from many goroutines at once, with overlapping ranges (the
// caller orders what must be ordered).
type Device interface {
	// Size is the length in bytes. It may grow while mapped (Remote.Grow);
	// whoever grows it then calls Server.Resized, so that the kernel
	// sees the new size. It never shrinks.
	Size() uint64
	// ReadOnly reports whether the device refuses writes (snapshots).
	ReadOnly() bool
	// ReadAt fills all of p with the bytes at off, or fails;
	// off+len(p) <= Size().
	ReadAt(ctx context.Context, p []byte, off uint64) error
	// WriteAt stores all of p at off, or fails; off+len(p) <= Size().
	// The bytes are durable once a later Flush returns, or when WriteAt
	// returns if fua is set.
	WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error
	// Flush makes every write answered so far durable.
	Flush(ctx context.Context) error
}

// Zeroer is an optional Device ability: discard and write-zeroes. Zero
// makes [off, off+n) read as zeros, freeing the space of whole blocks
// where it can; off+n <= Size(). Without it, fallocate(PUNCH_HOLE or
// ZERO_RANGE) fails with EOPNOTSUPP and the loop device offers no discard.
type Zeroer interface {
	Zero(ctx context.Context, off, n uint64) error
}

// errno turns a Device error into what the kernel gets.
func errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, errs.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, errs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, errs.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, errs.ErrNotSupported):
		return syscall.EOPNOTSUPP
	}
	return syscall.EIO
}
