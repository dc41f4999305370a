package peer

import (
	"errors"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Reply encodes v into r's buffer as its answer (Size and Serviced become
// the payload's length).
func Reply(r *xseg.Request, v wire.Payload) error {
	n, err := v.MarshalTo(r.Buffer())
	if err != nil {
		return fmt.Errorf("reply of %d bytes in a %d-byte buffer: %w", v.EncodedSize(), len(r.Buffer()), err)
	}
	r.SetSize(uint64(n))
	r.SetServiced(uint64(n))
	return nil
}

// ReplyLockOwner puts a wire.LockReply naming the holder into r when
// err names who holds a lock (an errs.LockHolder, such as a store's
// *LockedError), so that the submitter can say who holds it
// (LockOwnerOf). Other errors, and a buffer too small for the reply,
// leave r as it is.
func ReplyLockOwner(r *xseg.Request, err error) {
	var h errs.LockHolder
	if errors.As(err, &h) {
		Reply(r, &wire.LockReply{Owner: h.LockHolder()})
	}
}

// ReplyErrorText puts err's message into a failed reply, so that the
// submitter can show the cause, unless the op's buffer is the caller's
// data (READ, WRITE) or already holds a LockReply.
func ReplyErrorText(r *xseg.Request, err error) {
	if op := r.Op(); op == xseg.OpRead || op == xseg.OpWrite {
		return
	}
	if k, _ := wire.PeekKind(r.Data()); k == wire.KindLockReply {
		return
	}
	msg := err.Error()
	room := len(r.Buffer()) - (&wire.ErrorText{}).EncodedSize()
	if room <= 0 {
		return
	}
	if len(msg) > min(room, wire.MaxErrorLen) {
		msg = msg[:min(room, wire.MaxErrorLen)]
	}
	Reply(r, &wire.ErrorText{Message: msg})
}

// RemoteError is the error of a failed reply: the server's message (when
// it sent one) wrapping the sentinel of the reply's code.
type RemoteError struct {
	Msg string
	Err error
}

func (e *RemoteError) Error() string { return e.Msg }
func (e *RemoteError) Unwrap() error { return e.Err }

// ReplyErr returns a failed reply's error with the server's message, if it
// sent one; nil for a successful reply.
func ReplyErr(r *xseg.Request) error {
	err := r.Err()
	if err == nil {
		return nil
	}
	var et wire.ErrorText
	if et.Unmarshal(r.Data()) == nil && et.Message != "" {
		return &RemoteError{Msg: et.Message, Err: err}
	}
	return err
}

// LockOwnerOf returns the holder named in a failed reply, "" if none.
func LockOwnerOf(r *xseg.Request) string {
	if !errors.Is(r.Err(), errs.ErrLocked) {
		return ""
	}
	var lr wire.LockReply
	if lr.Unmarshal(r.Data()) != nil {
		return ""
	}
	return lr.Owner
}

// ReplyNames answers a LIST with the first page of sorted names that fits
// r's buffer; More says whether names were left out.
func ReplyNames(r *xseg.Request, names []string) error {
	out := wire.Names{}
	room := len(r.Buffer()) - (&wire.Names{}).EncodedSize()
	for i, n := range names {
		need := 2 + len(n)
		if need > room {
			out.More = true
			break
		}
		room -= need
		out.Names = names[:i+1]
	}
	if len(names) > 0 && len(out.Names) == 0 {
		return fmt.Errorf("a %d-byte buffer holds no name: %w", len(r.Buffer()), errs.ErrNoSpace)
	}
	return Reply(r, &out)
}
