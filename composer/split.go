package composer

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/metrics"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// The one split/collect path of volume READ and WRITE. Whoever has the
// pieces of a request's range (the mapper's answer on a worker in Serve,
// the mapping cache in the port's loop in ServeAsync) hands them to
// startIO, which sends one request per object piece to the data blocker,
// each borrowing its part of the caller's buffer, and collects the
// replies in the port's loop; the last one ends the request. Serve waits
// for that end; ServeAsync answers the request from it.

// part is one object piece of a request on its way to the blocker.
type part struct {
	sub    *xseg.Request
	off, n uint64 // in the caller's buffer
}

// split is a volume READ or WRITE whose parts are at the blocker.
type split struct {
	p    *peer.Peer
	r    *xseg.Request
	end  func(error)
	left atomic.Int32 // parts not answered yet, plus the submitter's own
	mu   sync.Mutex   // guards err
	err  error        // the first failure
}

// startIO sends r's parts along pieces, which cover r's range in order,
// and calls end once, with the first failure, when every part it sent is
// answered (from the port's loop, or from startIO itself if no part is
// left to wait for). A read's zero pieces are zeros; a write must get
// only pieces it may write in place (neither zero nor read-only: anything
// else is damage, and the volume's cached mappings go).
//
// Every part's request is taken and checked before any is sent: if one
// cannot be (a bad piece, a full request pool), startIO returns the error,
// nothing was sent and end is never called; a write is never half sent
// for that.
func (c *Composer) startIO(p *peer.Peer, r *xseg.Request, pieces []wire.MapPiece, end func(error)) error {
	op := r.Op()
	parts := make([]part, 0, len(pieces))
	abort := func(err error) error {
		for _, pt := range parts {
			p.Put(pt.sub)
		}
		return err
	}
	var at uint64
	zeros := false
	for _, s := range pieces {
		pos := at
		at += s.Size
		if s.Flags&wire.PieceZero != 0 {
			if op == xseg.OpRead {
				zeros = true
				continue
			}
			return abort(fmt.Errorf("mapper answered a zero block for a write at %d: %w", r.Offset()+pos, errs.ErrCorrupt))
		}
		if op == xseg.OpWrite && s.Flags&wire.PieceReadOnly != 0 {
			// An object the volume does not own (shared with a snapshot or
			// another holder's): writing it in place would change them.
			c.cache.invalidate(r.Target())
			return abort(fmt.Errorf("mapper answered object %q, not writable, for a write at %d: %w", s.Object, r.Offset()+pos, errs.ErrCorrupt))
		}
		sub, err := p.Alloc(0)
		if err != nil {
			return abort(err)
		}
		if err = sub.Borrow(r, pos, s.Size); err == nil {
			err = sub.SetTarget(s.Object)
		}
		if err != nil {
			p.Put(sub)
			return abort(err)
		}
		sub.SetOp(op)
		sub.SetOffset(s.Offset)
		sub.SetSize(s.Size)
		sub.SetFlags(r.Flags() & xseg.FlagFUA)
		parts = append(parts, part{sub, pos, s.Size})
	}
	if zeros {
		buf := r.Buffer()
		at = 0
		for _, s := range pieces {
			if s.Flags&wire.PieceZero != 0 {
				clear(buf[at : at+s.Size])
			}
			at += s.Size
		}
	}
	io := &split{p: p, r: r, end: end}
	io.left.Store(int32(len(parts)) + 1)
	for i, pt := range parts {
		if err := p.SubmitFunc(pt.sub, c.blocker, func(rep *xseg.Request) { io.reply(pt, rep) }); err != nil {
			// The rest is not sent: the request fails anyway.
			io.fail(err)
			for _, rest := range parts[i+1:] {
				p.Put(rest.sub)
			}
			io.left.Add(-int32(len(parts) - i - 1))
			io.done()
			break
		}
	}
	io.done() // the submitter's own count
	return nil
}

// reply takes part pt's reply, in the port's loop.
func (s *split) reply(pt part, rep *xseg.Request) {
	err := rep.Err()
	op := s.r.Op()
	switch {
	case err == nil:
		// A read past an object's end: the blocker zero-filled the rest.
	case errors.Is(err, errs.ErrNotFound) && op == xseg.OpRead:
		clear(s.r.Buffer()[pt.off : pt.off+pt.n]) // mapped, never written
	default:
		s.fail(fmt.Errorf("%s object %q: %w", op, rep.Target(), err))
	}
	s.p.Put(rep)
	s.done()
}

func (s *split) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// done counts one part (or the submitter) as finished; the last one ends
// the request.
func (s *split) done() {
	if s.left.Add(-1) != 0 {
		return
	}
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err == nil {
		s.r.SetServiced(s.r.Size())
	}
	s.end(err)
}

// ioDone counts a READ or WRITE that took from start until now in its
// volume's metrics, and names the volume and the range in its error.
func ioDone(v *volState, r *xseg.Request, start time.Time, err error) error {
	op := metrics.Read
	if r.Op() == xseg.OpWrite {
		op = metrics.Write
	}
	v.io.Done(op, r.Size(), time.Since(start), err)
	if err != nil {
		return fmt.Errorf("%s volume %q [%d,+%d): %w", r.Op(), r.Target(), r.Offset(), r.Size(), err)
	}
	return nil
}
