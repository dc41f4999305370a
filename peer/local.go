package peer

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/archipelago-go/archipelago/xseg"
)

// Local dispatch. Peers (and clients) of one process that share a segment
// hand requests to each other without the segment's rings: a request
// submitted to a port that a peer of this process serves is accepted there
// at once (xseg.Port.Handoff) and served in the submitter's goroutine,
// inline (InlineHandler), by ServeAsync, or by a worker through a channel;
// its answer goes straight to the waiter (xseg.Port.AnswerLocal). A
// hand-off then costs a function call or a goroutine switch instead of a
// wake-up of another thread or process; the segment's request states and
// port counters change as they would through the rings. archipelagod, which
// runs several roles in one process, is what this is for; peers of other
// processes still reach every port through the rings.
//
// The rings take over when the destination takes no more requests for now
// (nr_ops in flight) or is stopping. A callback of SubmitFunc may run
// before SubmitFunc returns, in the submitting goroutine (the destination
// answered at once): a submitter must not hold a lock that its callback
// takes.
//
// A peer with Options.InPlaceWhenIdle serves a request handed to it while
// it has nothing else in flight with Serve, in the submitter's goroutine,
// when that goroutine may block: when no port loop of the process is
// inside a handler or a reply callback (loopsServing), for the submitter
// may be one, and a port loop must never block. The submitter is then a
// goroutine that waits anyway (nbdd's reader at depth 1, a worker), and
// the hand-off to a worker and back is saved. With more in flight, here
// or at the submitting peer (mapperd's workers calling blockerm), the
// workers serve as usual, so requests run in parallel.
//
// The cost, measured (hosted, ext4, 4K random writes, 2 rounds each way):
// at depth 1 in place took 8.4-8.9k to 12.3-14.2k IOPS; at depth 32 it
// took 44-49k down to 27-37k. For nbdd's reader serving in place finds
// the chain idle each time (the chain it runs is done before it reads the
// next request), so a client's deep queue is served one request at a
// time; nothing below nbdd sees that queue. A hint from the NBD session
// (its own depth, bytes already buffered) carried down to this decision
// is what would keep depth 32 parallel; not done yet.

// ARCHIPELAGO_LOCAL_DISPATCH=0 in the environment turns it off: every
// request goes through the rings, as between processes; and
// ARCHIPELAGO_IN_PLACE=0 turns InPlaceWhenIdle off (for measurements).

// localDispatch says whether local dispatch is on.
var localDispatch atomic.Bool

// inPlace says whether Options.InPlaceWhenIdle applies
// (ARCHIPELAGO_IN_PLACE=0 turns it off, for measurements).
var inPlace atomic.Bool

func init() {
	localDispatch.Store(os.Getenv("ARCHIPELAGO_LOCAL_DISPATCH") != "0")
	inPlace.Store(os.Getenv("ARCHIPELAGO_IN_PLACE") != "0")
}

// loopsServing counts the port loops of the process running handlers or
// reply callbacks right now: while it is 0, the goroutine running is not
// a port loop.
var loopsServing atomic.Int32

type localKey struct {
	seg  string
	ino  uint64
	port int
}

// locals are the port loops of this process, by segment and port: an
// immutable map replaced under localsMu, read without a lock.
var (
	localsMu sync.Mutex
	locals   atomic.Pointer[map[localKey]*portLoop]
)

func keyOf(port *xseg.Port) localKey {
	s := port.Segment()
	return localKey{s.Name(), s.Inode(), port.No()}
}

// register makes loop reachable by local dispatch.
func register(loop *portLoop) {
	localsMu.Lock()
	defer localsMu.Unlock()
	old := locals.Load()
	m := make(map[localKey]*portLoop, 1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[keyOf(loop.port)] = loop
	locals.Store(&m)
}

// unregister takes loop out of local dispatch (before its port goes).
func unregister(loop *portLoop) {
	localsMu.Lock()
	defer localsMu.Unlock()
	old := locals.Load()
	if old == nil {
		return
	}
	k := keyOf(loop.port)
	if (*old)[k] != loop {
		return
	}
	m := make(map[localKey]*portLoop, len(*old))
	for kk, v := range *old {
		if kk != k {
			m[kk] = v
		}
	}
	locals.Store(&m)
}

// localLoop returns the loop of this process bound to port no of the
// segment from's port is on, or nil.
func localLoop(from *xseg.Port, no int) *portLoop {
	if !localDispatch.Load() {
		return nil
	}
	m := locals.Load()
	if m == nil {
		return nil
	}
	s := from.Segment()
	return (*m)[localKey{s.Name(), s.Inode(), no}]
}

// handOff serves r, submitted from loop src, at loop dst of this process
// without the rings. It returns false, the request untouched, when dst
// does not take it now (no peer serves there, it is full or stopping):
// the rings take it then.
func (src *portLoop) handOff(r *xseg.Request, dst *portLoop) bool {
	p := dst.peer
	if p == nil {
		return false
	}
	if p.reserve(1) == 0 {
		return false
	}
	if p.drain.Load() { // Stop sets it before it waits for ops to end
		p.done()
		return false
	}
	rr, err := src.port.Handoff(r, dst.port)
	if err != nil {
		p.done()
		return false
	}
	if ih, ok := p.h.(InlineHandler); ok {
		err := ih.ServeInline(rr)
		p.respond(rr, err)
		p.done()
		return true
	}
	if ah, ok := p.h.(AsyncHandler); ok && ah.ServeAsync(p, rr) {
		return true
	}
	if p.opts.InPlaceWhenIdle && inPlace.Load() && p.ops.Load() == 1 && (src.peer == nil || src.peer.ops.Load() <= 1) && loopsServing.Load() == 0 {
		p.serveJob(job{dst, rr})
		return true
	}
	p.work <- job{dst, rr}
	return true
}

// respond answers an accepted request: straight to its submitter's loop
// when that is in this process, else through the source port's ring.
func (p *Peer) respond(r *xseg.Request, err error) {
	port := p.loops[0].port
	if src := localLoop(port, r.Src()); src != nil {
		if rep := port.AnswerLocal(r, err, src.port); rep != nil {
			src.deliver(rep)
		}
		return
	}
	port.Respond(r, err)
}
