package volclient

import (
	"fmt"

	"github.com/archipelago-go/archipelago/xseg"
)

// asyncCaller is a Caller that can submit a request without a goroutine
// waiting for its reply (a *peer.Peer): fn gets the reply, in the port's
// loop or in whichever goroutine delivers it.
type asyncCaller interface {
	SubmitFunc(r *xseg.Request, dst int, fn func(rep *xseg.Request)) error
}

// StartReadAt starts reading len(p) bytes at off into p, a buffer from
// Lend, and returns true; done then gets the result exactly once, maybe
// before StartReadAt returns, from a goroutine that must not block (done
// must return quickly). It returns false, without calling done, when the
// read cannot go this way (p is not a lent buffer, the Client's Caller
// cannot submit without waiting, or v is closed): use ReadAt.
func (v *Volume) StartReadAt(p []byte, off uint64, done func(error)) bool {
	return v.start(xseg.OpRead, 0, p, off, done)
}

// StartWriteAt is StartReadAt for WriteAt: done gets the result of
// writing p (a lent buffer) at off; with fua the data is durable when done
// is called.
func (v *Volume) StartWriteAt(p []byte, off uint64, fua bool, done func(error)) bool {
	var fl xseg.Flags
	if fua {
		fl = xseg.FlagFUA
	}
	return v.start(xseg.OpWrite, fl, p, off, done)
}

func (v *Volume) start(op xseg.Op, fl xseg.Flags, p []byte, off uint64, done func(error)) bool {
	ac, ok := v.c.pc.(asyncCaller)
	if !ok || v.check(off, uint64(len(p))) != nil {
		return false
	}
	r := v.c.lender(p)
	if r == nil {
		return false
	}
	r.SetOp(op)
	r.SetFlags(fl)
	r.SetOffset(off)
	r.SetSize(uint64(len(p)))
	if r.SetTarget(v.target) != nil {
		return false
	}
	target := v.target
	err := ac.SubmitFunc(r, v.c.vlmcd, func(rep *xseg.Request) {
		// A lent request goes back to its lender, not to the pool.
		done(replyError(target, rep))
	})
	if err != nil {
		// The request was released with the failure: it can no longer
		// be given back.
		v.c.forget(r)
		done(fmt.Errorf("volume %q: %w", target, err))
	}
	return true
}
