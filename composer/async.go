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

var _ peer.AsyncHandler = (*Composer)(nil)

// ServeAsync is the fast path of READ and WRITE: when the mapping cache
// covers the whole range, the parts go to the blocker straight from the
// port's loop and the last part's reply answers the request, with no
// worker and no mapper involved. Anything else (a cache miss, a write
// that would wait behind a snapshot, a full request pool) takes the
// ordinary path.
func (c *Composer) ServeAsync(p *peer.Peer, r *xseg.Request) bool {
	op := r.Op()
	if op != xseg.OpRead && op != xseg.OpWrite {
		return false
	}
	n := r.Size()
	if n == 0 || n > uint64(len(r.Buffer())) {
		return false
	}
	start := time.Now()
	name := r.Target()
	segs, _, _ := c.cache.lookup(name, r.Offset(), n, op == xseg.OpWrite)
	if segs == nil {
		return false
	}
	v := c.get(name)
	if op == xseg.OpWrite && !v.gate.TryRLock() {
		c.put(name, v)
		return false
	}
	release := func() {
		if op == xseg.OpWrite {
			v.gate.RUnlock()
		}
		c.put(name, v)
	}
	// Take every part's request first, so that a full pool sends the
	// whole request the slow way rather than half of it.
	type part struct {
		sub     *xseg.Request
		off, sz uint64
	}
	parts := make([]part, 0, len(segs))
	var at uint64
	for _, s := range segs {
		pos := at
		at += s.Size
		if s.Flags&wire.PieceZero != 0 {
			continue // only reads see cached zero blocks
		}
		sub, err := p.Alloc(0)
		if err == nil {
			if err = sub.Borrow(r, pos, s.Size); err == nil {
				err = sub.SetTarget(s.Object)
			}
			if err != nil {
				p.Put(sub)
			}
		}
		if err != nil {
			for _, pt := range parts {
				p.Put(pt.sub)
			}
			release()
			return false
		}
		sub.SetOp(op)
		sub.SetOffset(s.Offset)
		sub.SetSize(s.Size)
		sub.SetFlags(r.Flags() & xseg.FlagFUA)
		parts = append(parts, part{sub, pos, s.Size})
	}
	// Zero blocks of a read.
	at = 0
	buf := r.Buffer()
	for _, s := range segs {
		if s.Flags&wire.PieceZero != 0 {
			clear(buf[at : at+s.Size])
		}
		at += s.Size
	}
	io := &asyncIO{p: p, r: r, release: release, start: start, stats: v.io, op: metrics.Read}
	if op == xseg.OpWrite {
		io.op = metrics.Write
	}
	io.left.Store(int32(len(parts)) + 1)
	for _, pt := range parts {
		pt := pt
		err := p.SubmitFunc(pt.sub, c.blocker, func(rep *xseg.Request) {
			err := rep.Err()
			switch {
			case errors.Is(err, errs.ErrNotFound) && op == xseg.OpRead:
				clear(buf[pt.off : pt.off+pt.sz]) // mapped, never written
			case err != nil:
				io.fail(fmt.Errorf("%s object %q: %w", op, rep.Target(), err))
			}
			p.Put(rep)
			io.done()
		})
		if err != nil {
			io.fail(err)
			io.done()
		}
	}
	io.done() // the submitter's own count
	return true
}

// asyncIO is a request served on the fast path: it is answered when its
// last part is done.
type asyncIO struct {
	p       *peer.Peer
	r       *xseg.Request
	release func()
	start   time.Time         // when the composer took it
	stats   *metrics.VolumeIO // the volume's counters
	op      int               // metrics.Read or metrics.Write
	left    atomic.Int32
	mu      sync.Mutex
	err     error
}

func (a *asyncIO) fail(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
}

func (a *asyncIO) done() {
	if a.left.Add(-1) != 0 {
		return
	}
	err := a.err
	a.stats.Done(a.op, a.r.Size(), time.Since(a.start), err)
	a.release()
	if err == nil {
		a.r.SetServiced(a.r.Size())
	} else {
		err = fmt.Errorf("%s volume %q [%d,+%d): %w", a.r.Op(), a.r.Target(), a.r.Offset(), a.r.Size(), err)
	}
	a.p.Answer(a.r, err)
}
