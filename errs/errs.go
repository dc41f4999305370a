// Package errs holds the sentinel errors shared by every Archipelago package
// and their numeric codes on the wire (a request in the segment carries a
// code, never a string).
//
// Wrap a sentinel with context and compare with errors.Is:
//
//	return fmt.Errorf("object %q: %w", name, errs.ErrNotFound)
//	if errors.Is(err, errs.ErrNotFound) { ... }
//
// Never match error strings.
package errs

import (
	"errors"
	"fmt"
)

// Sentinel errors. Each has a stable wire code (see Code and FromCode).
var (
	// ErrNotFound: the object, volume, port or lock does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the object or volume already exists.
	ErrExists = errors.New("already exists")
	// ErrLocked: a lock is held by another owner (try-once operations).
	ErrLocked = errors.New("locked by another owner")
	// ErrNotOwner: release of a lock held by another owner without force.
	ErrNotOwner = errors.New("lock held by another owner")
	// ErrInvalid: a malformed request, name, size or option.
	ErrInvalid = errors.New("invalid argument")
	// ErrIO: the backend failed to read or write.
	ErrIO = errors.New("I/O error")
	// ErrNoSpace: the segment heap, the request pool or the backend is full.
	ErrNoSpace = errors.New("no space left")
	// ErrPeerDied: the peer that held the request died before answering.
	ErrPeerDied = errors.New("peer died with the request in flight")
	// ErrNoPeer: nothing is bound to the destination port.
	ErrNoPeer = errors.New("no peer bound to port")
	// ErrPortBusy: the port is bound by another live process.
	ErrPortBusy = errors.New("port bound by a live peer")
	// ErrShutdown: the peer is stopping and did not serve the request.
	ErrShutdown = errors.New("peer shutting down")
	// ErrNotSupported: the peer does not serve this operation.
	ErrNotSupported = errors.New("operation not supported")
	// ErrReadOnly: a write to a read-only volume or object.
	ErrReadOnly = errors.New("read-only")
	// ErrCorrupt: stored data failed a consistency check (bad magic,
	// version, checksum). Tools tell corruption apart with errors.Is.
	ErrCorrupt = errors.New("corrupt data")
	// ErrVersion: a segment or on-disk format of another version.
	ErrVersion = errors.New("unsupported format version")
	// ErrTooLarge: a size beyond a limit.
	ErrTooLarge = errors.New("too large")
	// ErrBusy: the resource is in use (e.g. volume open elsewhere).
	ErrBusy = errors.New("busy")
	// ErrFenced: this host held a volume's lock and another host broke it
	// (a forced unlock): its writes since may be lost, and its writes and
	// flushes fail until the volume is closed here (an I/O error to a
	// block device's user).
	ErrFenced = errors.New("fenced: the volume's lock was broken by another host")
)

// Code is the wire form of an error in a request.
type Code uint32

// Wire codes. 0 means success; unknown codes decode to ErrIO.
const (
	CodeOK Code = iota
	CodeNotFound
	CodeExists
	CodeLocked
	CodeNotOwner
	CodeInvalid
	CodeIO
	CodeNoSpace
	CodePeerDied
	CodeNoPeer
	CodePortBusy
	CodeShutdown
	CodeNotSupported
	CodeReadOnly
	CodeCorrupt
	CodeVersion
	CodeTooLarge
	CodeBusy
	CodeFenced
)

var table = []struct {
	code Code
	err  error
}{
	{CodeNotFound, ErrNotFound},
	{CodeExists, ErrExists},
	{CodeLocked, ErrLocked},
	{CodeNotOwner, ErrNotOwner},
	{CodeInvalid, ErrInvalid},
	{CodeIO, ErrIO},
	{CodeNoSpace, ErrNoSpace},
	{CodePeerDied, ErrPeerDied},
	{CodeNoPeer, ErrNoPeer},
	{CodePortBusy, ErrPortBusy},
	{CodeShutdown, ErrShutdown},
	{CodeNotSupported, ErrNotSupported},
	{CodeReadOnly, ErrReadOnly},
	{CodeCorrupt, ErrCorrupt},
	{CodeVersion, ErrVersion},
	{CodeTooLarge, ErrTooLarge},
	{CodeBusy, ErrBusy},
	{CodeFenced, ErrFenced},
}

// ToCode maps an error to its wire code: nil is CodeOK, a wrapped sentinel
// its code, anything else CodeIO.
func ToCode(err error) Code {
	if err == nil {
		return CodeOK
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return CodeIO
}

// FromCode maps a wire code back to its sentinel (nil for CodeOK).
func FromCode(c Code) error {
	if c == CodeOK {
		return nil
	}
	for _, e := range table {
		if e.code == c {
			return e.err
		}
	}
	return fmt.Errorf("unknown error code %d: %w", c, ErrIO)
}

// LockHolder is an error that names the owner holding a lock (a
// store's *LockedError is one); errors.As finds it through wrapping. A
// peer's failed reply carries the name (peer.ReplyLockOwner,
// wire.LockReply), so that the submitter can say who holds the lock.
type LockHolder interface {
	error
	LockHolder() string
}

// PeerGone reports whether err says that the peer a request was for is not
// there now (nothing bound to its port, died with the request, or
// stopping): a peer restarting, so the request may be sent again.
func PeerGone(err error) bool {
	return errors.Is(err, ErrNoPeer) || errors.Is(err, ErrPeerDied) || errors.Is(err, ErrShutdown)
}
