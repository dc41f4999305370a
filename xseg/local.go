package xseg

import (
	"fmt"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// Hand-offs inside one process. When the submitter of a request and the
// peer serving its destination port are in the same process, the request
// need not go through the port's rings: Handoff makes it accepted at the
// destination at once, and AnswerLocal makes the answer the submitter's
// again, with no ring, no lock round on the destination and no wake-up.
// The request's state, its ports and every port counter change exactly as
// a Submit, Accept, Respond and Receive would change them, so tools and
// recovery see the same segment; a process that dies with such requests
// in flight dies as their submitter too, and recovery releases them.

// Inode is the inode of the segment's file: two mappings of one segment
// in a process (two Joins) have the same name and inode.
func (s *Segment) Inode() uint64 { return s.ino }

// Handoff hands request r, held by this process, to port dst, bound by
// this process (through this mapping or another of the same segment): it
// returns dst's handle of the request, accepted there, as Accept would.
// The reply goes back to p, as after Submit. It fails with
// errs.ErrNoPeer if dst is no longer bound by this process; the request
// is then still the caller's.
func (p *Port) Handoff(r *Request, dst *Port) (*Request, error) {
	s, ds := p.s, dst.s
	if st, pid := unpackState(r.h.state.Load()); st != stAlloc || pid != s.pid {
		return nil, fmt.Errorf("hand off %v: not held by this process: %w", r, errs.ErrInvalid)
	}
	if dst.p.ownerPID.Load() != ds.pid {
		return nil, fmt.Errorf("port %d of segment %q: %w", dst.no, ds.name, errs.ErrNoPeer)
	}
	r.h.src = p.no
	r.h.srcGen = p.p.bindGen.Load()
	r.h.errcode = 0
	r.h.submitNano = time.Now().UnixNano()
	r.h.dst = dst.no
	if !r.h.state.CompareAndSwap(packState(stAlloc, s.pid), packState(stAccepted, ds.pid)) {
		panic(fmt.Sprintf("xseg: request %d changed hands while held", r.idx))
	}
	dst.p.submitted.Add(1)
	dst.p.inflight.Add(1)
	return ds.handle(r.idx), nil
}

// AnswerLocal answers request r, accepted by this process, to src, the
// port it came from, bound by this process: it returns src's handle of
// the reply, held by this process as Receive would give it. If src is no
// longer the port that submitted r (released, or bound again since), it
// releases the request and returns nil, as Respond drops such a reply.
func (p *Port) AnswerLocal(r *Request, err error, src *Port) *Request {
	s, ss := p.s, src.s
	code := errs.ToCode(err)
	r.h.errcode = uint32(code)
	d := s.port(r.h.dst)
	q := ss.lockPort(src.no)
	live := r.h.src == src.no && q.ownerPID.Load() == ss.pid && q.bindGen.Load() == r.h.srcGen
	d.inflight.Add(-1)
	d.served.Add(1)
	if code != errs.CodeOK {
		d.failed.Add(1)
	}
	if live {
		r.h.state.Store(packState(stAlloc, ss.pid))
		q.received.Add(1)
	}
	ss.unlockPort(q)
	if !live {
		s.put(r.h)
		s.h.reclaimed.Add(1)
		return nil
	}
	return ss.handle(r.idx)
}
