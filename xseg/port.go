package xseg

import (
	"fmt"
	"os"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

const (
	ringReq   = 0
	ringReply = 1
)

// Port is a port bound by this process.
type Port struct {
	s    *Segment
	no   uint32
	p    *port
	bell *os.File // the doorbell this owner sleeps on (bell.go); nil: the futex
}

// No is the port number.
func (p *Port) No() int { return int(p.no) }

// Segment is the segment the port belongs to.
func (p *Port) Segment() *Segment { return p.s }

// lockPort takes port no's lock, rebuilding its rings if the holder died.
func (s *Segment) lockPort(no uint32) *port {
	q := s.port(no)
	if pidLock(&q.lock, s.pid) {
		s.rebuildRings(no)
	}
	return q
}

func (s *Segment) unlockPort(q *port) { pidUnlock(&q.lock, s.pid) }

// rebuildRings recomputes both rings of port no from the request states.
// Called with the port's lock held: every transition into or out of
// "queued at no" and "replied to no" happens under that lock.
func (s *Segment) rebuildRings(no uint32) {
	q := s.port(no)
	var nreq, nrep uint32
	for i := uint32(0); i < s.nreqs; i++ {
		r := s.req(i)
		st, _ := unpackState(r.state.Load())
		switch {
		case st == stQueued && r.dst == no:
			s.ringSlot(no, ringReq, nreq).Store(i)
			nreq++
		case st == stReplied && r.src == no:
			s.ringSlot(no, ringReply, nrep).Store(i)
			nrep++
		}
	}
	q.reqHead.Store(0)
	q.reqTail.Store(nreq)
	q.repHead.Store(0)
	q.repTail.Store(nrep)
	s.h.repairs.Add(1)
}

// push appends request i to a ring of port no. Rings hold as many slots as
// the pool has requests, so they never overflow. Port lock held.
func (s *Segment) push(no, kind, i uint32) {
	q := s.port(no)
	tail := &q.reqTail
	if kind == ringReply {
		tail = &q.repTail
	}
	t := tail.Load()
	s.ringSlot(no, kind, t).Store(i)
	tail.Store(t + 1)
}

// pop removes up to max requests from a ring of port no. Port lock held.
func (s *Segment) pop(no, kind uint32, max int, fn func(i uint32)) {
	q := s.port(no)
	head, tail := &q.reqHead, &q.reqTail
	if kind == ringReply {
		head, tail = &q.repHead, &q.repTail
	}
	h, t := head.Load(), tail.Load()
	for n := 0; h != t && n < max; n++ {
		fn(s.ringSlot(no, kind, h).Load())
		h++
	}
	head.Store(h)
}

// signal wakes the owner of port no if it sleeps: through its doorbell if
// it has one, else on the futex.
func (s *Segment) signal(no uint32) {
	q := s.port(no)
	q.seq.Add(1)
	if q.waiters.Load() > 0 {
		if gen := q.bell.Load(); gen != 0 && s.ring(no, gen) {
			return
		}
		futexWakeAll(&q.seq)
	}
}

func (s *Segment) checkPortNo(no int) error {
	if no < 0 || no >= int(s.nports) {
		return fmt.Errorf("port %d outside 0..%d of segment %q: %w", no, s.nports-1, s.name, errs.ErrInvalid)
	}
	return nil
}

// Bind binds port no to this process. It fails with errs.ErrPortBusy if a
// live process holds it; a port left by a dead process is reclaimed (its
// requests fail back with errs.ErrPeerDied) and bound.
func (s *Segment) Bind(no int) (*Port, error) {
	if err := s.checkPortNo(no); err != nil {
		return nil, err
	}
	_, myStart := procInfo(s.pid)
	for attempt := 0; ; attempt++ {
		q := s.lockPort(uint32(no))
		pid, start := q.ownerPID.Load(), q.ownerStart.Load()
		if pid == 0 {
			q.ownerPID.Store(s.pid)
			q.ownerStart.Store(myStart)
			q.bindGen.Add(1)
			q.bell.Store(0)
			q.name = [32]byte{}
			s.unlockPort(q)
			return &Port{s: s, no: uint32(no), p: q}, nil
		}
		s.unlockPort(q)
		if pid == s.pid || ownerAlive(pid, start) {
			return nil, fmt.Errorf("port %d of segment %q is bound by live pid %d: %w", no, s.name, pid, errs.ErrPortBusy)
		}
		if attempt > 3 {
			return nil, fmt.Errorf("port %d of segment %q: could not reclaim it from dead pid %d: %w", no, s.name, pid, errs.ErrPortBusy)
		}
		s.reclaimPort(uint32(no), pid, errs.ErrPeerDied)
	}
}

// BindDynamic binds the first free port at or above the segment's first
// dynamic port.
func (s *Segment) BindDynamic() (*Port, error) {
	for no := s.dynports; no < s.nports; no++ {
		q := s.port(no)
		if pid := q.ownerPID.Load(); pid != 0 && (pid == s.pid || ownerAlive(pid, q.ownerStart.Load())) {
			continue
		}
		if p, err := s.Bind(int(no)); err == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("segment %q: all %d dynamic ports are bound: %w", s.name, s.nports-s.dynports, errs.ErrNoSpace)
}

// Owner reports the pid bound to port no (0 if none) and whether it lives.
func (s *Segment) Owner(no int) (pid int, alive bool) {
	if s.checkPortNo(no) != nil {
		return 0, false
	}
	q := s.port(uint32(no))
	p := q.ownerPID.Load()
	return int(p), p != 0 && ownerAlive(p, q.ownerStart.Load())
}

// reclaimPort unbinds port no if it is still bound to pid (0: whatever it
// is bound to, or unbound with requests left in its rings), failing its
// queued requests back with why and releasing undelivered replies.
func (s *Segment) reclaimPort(no, pid uint32, why error) {
	var fail, free []uint32
	q := s.lockPort(no)
	if cur := q.ownerPID.Load(); pid == 0 || cur == pid {
		q.ownerPID.Store(0)
		q.ownerStart.Store(0)
		q.bell.Store(0)
		// Take the requests over while the lock is held so that nobody
		// rebuilds them into a ring again.
		s.pop(no, ringReq, int(s.nreqs), func(i uint32) {
			s.req(i).state.Store(packState(stAccepted, s.pid))
			s.port(s.req(i).dst).inflight.Add(1)
			fail = append(fail, i)
		})
		s.pop(no, ringReply, int(s.nreqs), func(i uint32) {
			s.req(i).state.Store(packState(stAlloc, s.pid))
			free = append(free, i)
		})
	}
	s.unlockPort(q)
	if len(fail) > 0 {
		rs, ev := make([]*Request, len(fail)), make([]error, len(fail))
		for k, i := range fail {
			rs[k], ev[k] = s.handle(i), why
		}
		s.respondAll(rs, ev)
	}
	for _, i := range free {
		s.put(s.req(i))
	}
	if n := len(fail) + len(free); n > 0 {
		s.h.reclaimed.Add(uint64(n))
	}
}

// Release unbinds the port. Requests still queued to it fail back with
// errs.ErrNoPeer; replies not yet received are dropped.
func (p *Port) Release() {
	p.closeBell()
	p.s.reclaimPort(p.no, p.s.pid, errs.ErrNoPeer)
}

// Alloc takes a request from the pool with a buffer of at least dataLen
// bytes (none if 0). Its reply will come to this port.
func (p *Port) Alloc(dataLen int) (*Request, error) {
	s := p.s
	if dataLen < 0 {
		return nil, fmt.Errorf("buffer of %d bytes: %w", dataLen, errs.ErrInvalid)
	}
	i, ok := s.grab()
	if !ok {
		return nil, fmt.Errorf("segment %q: all %d requests in use: %w", s.name, s.nreqs, errs.ErrNoSpace)
	}
	r := s.req(i)
	r.gen.Add(1)
	r.op, r.flags, r.errcode = 0, 0, 0
	r.src, r.dst, r.srcGen = p.no, p.no, 0
	r.offset, r.size, r.serviced = 0, 0, 0
	r.targetLen, r.pathLen, r.submitNano = 0, 0, 0
	if dataLen > 0 {
		s.lockHeap()
		err := s.allocBuf(r, uint64(dataLen))
		s.unlockHeap()
		if err != nil {
			r.state.Store(packState(stFree, 0))
			return nil, fmt.Errorf("segment %q: %w", s.name, err)
		}
	}
	return s.handle(i), nil
}

// grab takes a free slot of the pool for this process.
func (s *Segment) grab() (uint32, bool) {
	start := s.h.reqHint.Add(1)
	for k := uint32(0); k < s.nreqs; k++ {
		i := (start + k) & (s.nreqs - 1)
		r := s.req(i)
		if r.state.Load() == 0 && r.state.CompareAndSwap(0, packState(stAlloc, s.pid)) {
			s.h.reqHint.Store(i)
			return i, true
		}
	}
	return 0, false
}

// Put returns a request this process holds to the pool, with its buffer.
func (p *Port) Put(r *Request) { p.s.put(r.h) }

func (s *Segment) put(r *reqHdr) {
	if r.owned != 0 {
		s.lockHeap()
		s.freeBuf(r)
		s.unlockHeap()
	} else {
		r.dataOff, r.dataCap, r.borrow = 0, 0, 0
	}
	r.state.Store(packState(stFree, 0))
}

// Submit queues a request this process holds (from Alloc or Receive) to
// port dst and wakes its owner. The reply comes back to the request's
// source port. Fails with errs.ErrNoPeer if nothing is bound to dst; the
// request is then still held by the caller.
func (p *Port) Submit(r *Request, dst int) error {
	s := p.s
	if err := s.checkPortNo(dst); err != nil {
		return err
	}
	if st, pid := unpackState(r.h.state.Load()); st != stAlloc || pid != s.pid {
		return fmt.Errorf("submit %v: not held by this process: %w", r, errs.ErrInvalid)
	}
	r.h.src = p.no
	r.h.srcGen = p.p.bindGen.Load()
	r.h.errcode = 0
	r.h.submitNano = time.Now().UnixNano()
	return s.enqueue(r.h, r.idx, uint32(dst), packState(stAlloc, s.pid))
}

// enqueue moves request i from state from to "queued at dst".
func (s *Segment) enqueue(r *reqHdr, i, dst uint32, from uint64) error {
	q := s.lockPort(dst)
	if q.ownerPID.Load() == 0 {
		s.unlockPort(q)
		return fmt.Errorf("port %d of segment %q: %w", dst, s.name, errs.ErrNoPeer)
	}
	r.dst = dst
	if !r.state.CompareAndSwap(from, packState(stQueued, 0)) {
		s.unlockPort(q)
		panic(fmt.Sprintf("xseg: request %d changed hands while held", i))
	}
	s.push(dst, ringReq, i)
	q.submitted.Add(1)
	s.unlockPort(q)
	s.signal(dst)
	return nil
}

// Accept takes up to len(buf) requests queued to this port, in one lock
// round, and returns them (buf[:n]). The caller serves each and answers it
// with Respond or passes it on with Forward.
func (p *Port) Accept(buf []*Request) []*Request {
	rs := p.take(ringReq, stAccepted, buf)
	p.p.inflight.Add(int32(len(rs)))
	return rs
}

// take pops up to len(buf) requests from one of the port's rings under one
// lock round, handing them to this process in state st.
func (p *Port) take(kind, st uint32, buf []*Request) []*Request {
	if !p.pendingIn(kind) {
		return buf[:0]
	}
	s, n := p.s, 0
	s.lockPort(p.no)
	s.pop(p.no, kind, len(buf), func(i uint32) {
		s.req(i).state.Store(packState(st, s.pid))
		buf[n] = s.handle(i)
		n++
	})
	s.unlockPort(p.p)
	return buf[:n]
}

// Respond answers a request this process accepted: err nil marks it
// served, anything else failed (with the error's wire code). If the source
// port is gone (unbound, or bound again since the request was submitted)
// nobody waits for the answer and the request is released.
func (p *Port) Respond(r *Request, err error) {
	rs, ev := [1]*Request{r}, [1]error{err}
	p.s.respondAll(rs[:], ev[:])
}

// RespondAll answers many accepted requests at once: the replies bound for
// one source port are pushed in one lock round and one wake-up. errv[i]
// answers rs[i]. rs is cleared.
func (p *Port) RespondAll(rs []*Request, errv []error) { p.s.respondAll(rs, errv) }

// Forward passes a request this process accepted on to port dst; the
// reply still goes to the original source. This port is recorded in the
// request's path. Fails with errs.ErrNoPeer if nothing is bound to dst
// (the request stays accepted by the caller).
func (p *Port) Forward(r *Request, dst int) error {
	s := p.s
	if err := s.checkPortNo(dst); err != nil {
		return err
	}
	pathLen := r.h.pathLen
	if pathLen < MaxPath {
		r.h.path[pathLen] = p.no
		r.h.pathLen++
	}
	from := r.h.dst
	if err := s.enqueue(r.h, r.idx, uint32(dst), packState(stAccepted, s.pid)); err != nil {
		r.h.pathLen = pathLen
		return err
	}
	s.port(from).inflight.Add(-1)
	return nil
}

// Receive takes up to len(buf) replies that came to this port and returns
// them (buf[:n]); the process holds them until it calls Put or submits
// them again.
func (p *Port) Receive(buf []*Request) []*Request {
	rs := p.take(ringReply, stAlloc, buf)
	p.p.received.Add(uint64(len(rs)))
	return rs
}

// pendingIn reports whether ring kind of the port holds something.
func (p *Port) pendingIn(kind uint32) bool {
	q := p.p
	if kind == ringReply {
		return q.repHead.Load() != q.repTail.Load()
	}
	return q.reqHead.Load() != q.reqTail.Load()
}

// pending reports whether the reply ring, or with requests also the
// request ring, of the port holds something.
func (p *Port) pending(requests bool) bool {
	return (requests && p.pendingIn(ringReq)) || p.pendingIn(ringReply)
}

// Wait sleeps until a request or reply arrives at the port, Wake is
// called, or d passes. It returns at once if something is already there.
// Waking costs the submitter a system call only while a waiter sleeps, so
// a busy peer that drains its rings between waits sees no system calls.
func (p *Port) Wait(d time.Duration) { p.WaitFor(d, true) }

// WaitFor is Wait that, with requests false, does not return early for
// queued requests (for a peer that takes no more requests for now but
// waits for the replies of its own).
func (p *Port) WaitFor(d time.Duration, requests bool) {
	q := p.p
	q.waiters.Add(1)
	seq := q.seq.Load()
	if !p.pending(requests) {
		if p.bell != nil {
			p.sleepOnBell(d)
		} else {
			futexWaitOn(&q.seq, seq, d)
		}
	}
	q.waiters.Add(^uint32(0))
}

// Queued reports how many requests wait in the port's request ring.
func (p *Port) Queued() int { return int(p.p.reqTail.Load() - p.p.reqHead.Load()) }

// Wake makes a Wait on this port return (for shutdown).
func (p *Port) Wake() { p.s.signal(p.no) }

// SetName records a role name on the port, for tools: its first 32
// bytes, each one outside printable ASCII shown as '_' (Check takes any
// other byte for damage).
func (p *Port) SetName(name string) {
	var b [32]byte
	copy(b[:], name)
	for i, c := range b {
		if c != 0 && (c < 0x21 || c > 0x7e) {
			b[i] = '_'
		}
	}
	p.p.name = b
}

// PortStat describes one port, for tools.
type PortStat struct {
	No        int
	Name      string // role name the owner set
	PID       int    // owner, 0 if unbound
	Alive     bool
	Queued    int // requests waiting to be accepted
	Replies   int // replies waiting to be received
	InFlight  int // accepted, not answered
	Submitted uint64
	Served    uint64
	Failed    uint64
	Received  uint64
	Doorbell  bool // the owner sleeps on a doorbell, not on the futex
}

// PortStat reads port no's owner, queue depths and counters.
func (s *Segment) PortStat(no int) (PortStat, error) {
	if err := s.checkPortNo(no); err != nil {
		return PortStat{}, err
	}
	q := s.port(uint32(no))
	pid := q.ownerPID.Load()
	name := q.name[:]
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	return PortStat{
		No: no, Name: string(name), PID: int(pid), Alive: pid != 0 && ownerAlive(pid, q.ownerStart.Load()),
		Queued: int(q.reqTail.Load() - q.reqHead.Load()), Replies: int(q.repTail.Load() - q.repHead.Load()),
		InFlight: int(q.inflight.Load()), Submitted: q.submitted.Load(), Served: q.served.Load(),
		Failed: q.failed.Load(), Received: q.received.Load(),
		Doorbell: pid != 0 && q.bell.Load() != 0 && q.bell.Load() == q.bindGen.Load(),
	}, nil
}

// Pending reports whether a reply, or with requests also a request, waits
// at the port. It takes no lock and makes no system call.
func (p *Port) Pending(requests bool) bool { return p.pending(requests) }

func (s *Segment) respondAll(rs []*Request, errv []error) {
	for i, r := range rs {
		if r == nil {
			continue
		}
		src, gen := r.h.src, r.h.srcGen
		q := s.lockPort(src)
		live := q.ownerPID.Load() != 0 && q.bindGen.Load() == gen
		var drop []*Request
		for j := i; j < len(rs); j++ {
			x := rs[j]
			if x == nil || x.h.src != src {
				continue
			}
			code := errs.ToCode(errv[j])
			x.h.errcode = uint32(code)
			d := s.port(x.h.dst)
			d.inflight.Add(-1)
			d.served.Add(1)
			if code != errs.CodeOK {
				d.failed.Add(1)
			}
			if live && x.h.srcGen == gen {
				x.h.state.Store(packState(stReplied, 0))
				s.push(src, ringReply, x.idx)
			} else {
				drop = append(drop, x)
			}
			rs[j] = nil
		}
		s.unlockPort(q)
		if live {
			s.signal(src)
		}
		for _, x := range drop {
			s.put(x.h)
			s.h.reclaimed.Add(1)
		}
	}
}
