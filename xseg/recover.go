package xseg

import (
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// Recover reclaims what dead processes left in the segment:
//   - ports bound by a dead process are unbound; requests queued to them
//     fail back to their submitters with errs.ErrPeerDied, replies waiting
//     in them are released;
//   - requests a dead process was serving fail back with errs.ErrPeerDied
//     (once no live request borrows their buffer);
//   - requests a dead process held (filling them, or holding a reply) are
//     released with their buffers.
//
// Locks held by dead processes are taken over, and the structures behind
// them rebuilt, by whoever next needs them. Recover is safe to call at any
// time from any process; one process runs it at a time (others return at
// once). It returns the number of requests reclaimed.
func (s *Segment) Recover() int {
	ok, _ := pidTryLock(&s.h.janitorLock, s.pid)
	if !ok {
		return 0
	}
	defer pidUnlock(&s.h.janitorLock, s.pid)
	before := s.h.reclaimed.Load()

	alive := map[uint32]bool{s.pid: true}
	isAlive := func(pid uint32) bool {
		a, ok := alive[pid]
		if !ok {
			a = pidAlive(pid)
			alive[pid] = a
		}
		return a
	}

	for no := uint32(0); no < s.nports; no++ {
		q := s.port(no)
		pid := q.ownerPID.Load()
		switch {
		case pid != 0 && pid != s.pid && !ownerAlive(pid, q.ownerStart.Load()):
			s.reclaimPort(no, pid, errs.ErrPeerDied)
		case pid == 0 && (q.reqHead.Load() != q.reqTail.Load() || q.repHead.Load() != q.repTail.Load()):
			// Left over from a process that died while unbinding.
			s.reclaimPort(no, 0, errs.ErrPeerDied)
		}
	}

	// Buffers still lent to a live request must not be failed back (their
	// holder would reuse memory the borrower still writes).
	lent := map[uint32]bool{}
	for i := uint32(0); i < s.nreqs; i++ {
		r := s.req(i)
		if st, _ := unpackState(r.state.Load()); st != stFree && r.borrow != 0 {
			lent[r.borrow-1] = true
		}
	}
	for i := uint32(0); i < s.nreqs; i++ {
		r := s.req(i)
		w := r.state.Load()
		st, pid := unpackState(w)
		if (st != stAlloc && st != stAccepted) || pid == s.pid || lent[i] || isAlive(pid) {
			continue
		}
		if !r.state.CompareAndSwap(w, packState(st, s.pid)) {
			continue
		}
		s.h.reclaimed.Add(1)
		if st == stAlloc {
			s.put(r)
		} else {
			s.respondAll([]*Request{s.handle(i)}, []error{errs.ErrPeerDied})
		}
	}
	return int(s.h.reclaimed.Load() - before)
}

// Check verifies the segment's invariants and returns the first violation
// (wrapped errs.ErrCorrupt): the header's layout is the one its geometry
// gives; the heap bitmap equals the union of the requests' own buffers,
// which never overlap; every port's fields are consistent (an unbound port
// has no owner start time nor doorbell, a bound one a plausible pid, the
// doorbell names the current binding, counters and cursors in range, the
// role name printable); every ring holds exactly the requests whose state
// puts them there. It takes the locks it reads under,
// so it may run on a live segment.
func (s *Segment) Check() error {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("segment %q: "+format+": %w", append(append([]any{s.name}, a...), errs.ErrCorrupt)...)
	}
	if err := s.checkHeader(); err != nil {
		return err
	}
	if hu, n := s.h.heapUsed.Load(), s.units; hu > n {
		return corrupt("heap used counter %d units of %d", hu, n)
	}
	s.lockHeap()
	owner := make(map[uint32]uint32) // unit -> request
	used := uint32(0)
	for i := uint32(0); i < s.nreqs; i++ {
		r := s.req(i)
		if r.owned == 0 {
			continue
		}
		if st, _ := unpackState(r.state.Load()); st == stFree {
			s.unlockHeap()
			return corrupt("free request %d owns a buffer", i)
		}
		if r.dataOff < s.h.heapOff || r.dataOff%UnitSize != 0 || r.dataOff+r.dataCap > s.h.size {
			s.unlockHeap()
			return corrupt("request %d buffer [%d,+%d) outside the heap", i, r.dataOff, r.dataCap)
		}
		u, n := s.unitsOf(r)
		for k := u; k < u+n; k++ {
			if j, dup := owner[k]; dup {
				s.unlockHeap()
				return corrupt("requests %d and %d share heap unit %d", j, i, k)
			}
			owner[k] = i
		}
		used += n
	}
	for u := uint32(0); u < s.units; u++ {
		set := *s.bitmapWord(u / 64)>>(u%64)&1 != 0
		if _, own := owner[u]; set != own {
			s.unlockHeap()
			return corrupt("heap unit %d: bitmap says allocated=%v, requests say %v", u, set, own)
		}
	}
	if hu := s.h.heapUsed.Load(); hu != used {
		s.unlockHeap()
		return corrupt("heap used counter %d units, buffers hold %d", hu, used)
	}
	s.unlockHeap()

	for no := uint32(0); no < s.nports; no++ {
		q := s.lockPort(no)
		if err := s.checkPort(no, q); err != nil {
			s.unlockPort(q)
			return corrupt("%v", err)
		}
		inRing := map[uint32]uint32{}
		for kind := uint32(0); kind < 2; kind++ {
			head, tail := q.reqHead.Load(), q.reqTail.Load()
			if kind == ringReply {
				head, tail = q.repHead.Load(), q.repTail.Load()
			}
			if tail-head > s.nreqs {
				s.unlockPort(q)
				return corrupt("port %d ring %d holds %d > %d entries", no, kind, tail-head, s.nreqs)
			}
			for h := head; h != tail; h++ {
				i := s.ringSlot(no, kind, h).Load()
				if i >= s.nreqs {
					s.unlockPort(q)
					return corrupt("port %d ring %d: slot holds request %d", no, kind, i)
				}
				inRing[i] = kind
			}
		}
		for i := uint32(0); i < s.nreqs; i++ {
			r := s.req(i)
			st, _ := unpackState(r.state.Load())
			kind, in := inRing[i]
			want := (st == stQueued && r.dst == no) || (st == stReplied && r.src == no)
			wantKind := uint32(ringReq)
			if st == stReplied {
				wantKind = ringReply
			}
			if want != in || (in && kind != wantKind) {
				s.unlockPort(q)
				return corrupt("port %d: request %d (state %d) in ring=%v, expected %v", no, i, st, in, want)
			}
		}
		s.unlockPort(q)
	}
	return nil
}

// maxPID is the largest pid Linux hands out (PID_MAX_LIMIT).
const maxPID = 1 << 22

// checkPort verifies the fields of port no (its lock held).
func (s *Segment) checkPort(no uint32, q *port) error {
	pid, start := q.ownerPID.Load(), q.ownerStart.Load()
	gen, bell := q.bindGen.Load(), q.bell.Load()
	switch {
	case pid == 0 && (start != 0 || bell != 0):
		return fmt.Errorf("port %d: unbound, yet owner start time %d and doorbell of binding %d", no, start, bell)
	case pid > maxPID:
		return fmt.Errorf("port %d: owner pid %d beyond %d", no, pid, maxPID)
	case pid != 0 && (start == 0 || gen == 0):
		return fmt.Errorf("port %d: bound to pid %d with start time %d and binding %d", no, pid, start, gen)
	case bell != 0 && bell != gen:
		return fmt.Errorf("port %d: doorbell of binding %d, the port is at binding %d", no, bell, gen)
	}
	// Accept counts its requests after it drops the lock, so an answer may
	// be counted first: a small negative count is a moment, not damage.
	if n := q.inflight.Load(); n < -int32(s.nreqs) || n > int32(s.nreqs) {
		return fmt.Errorf("port %d: %d requests in flight, the pool has %d", no, n, s.nreqs)
	}
	// failed goes up right after served (a crash between them leaves
	// served ahead); read in that order's reverse, so that a request
	// answered meanwhile cannot make a sound port look damaged. (served
	// against submitted proves nothing: a submitter that died between its
	// push and its count leaves served ahead of submitted.)
	fail := q.failed.Load()
	if srv := q.served.Load(); fail > srv {
		return fmt.Errorf("port %d: counters served %d, failed %d", no, srv, fail)
	}
	end := false
	for i, c := range q.name {
		switch {
		case c == 0:
			end = true
		case end || c < 0x21 || c > 0x7e:
			return fmt.Errorf("port %d: role name %q: byte %d is %#x", no, q.name[:], i, c)
		}
	}
	return nil
}
