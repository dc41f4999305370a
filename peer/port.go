package peer

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// recoverEvery is how often a port loop looks for dead processes'
// leftovers in the segment while it waits.
const recoverEvery = 500 * time.Millisecond

// DefaultSpin is how long a port loop polls its rings before it sleeps,
// unless Wait.Spin says otherwise.
const DefaultSpin = 5 * time.Microsecond

// Wait tunes how the loop of a port waits for work once its rings are
// empty: it polls them for Spin, then sleeps on the futex or on the
// doorbell (docs/xseg.md, "Waking without polling"). The zero value is
// the default. It is a knob for measurements: the programs take it from
// the environment (internal/daemon: ARCHIPELAGO_SPIN_US,
// ARCHIPELAGO_DOORBELL).
type Wait struct {
	// Spin is how long the loop polls before it sleeps: 0 means
	// DefaultSpin, a negative value no more than a few polls.
	Spin time.Duration
	// Sleep, unless SleepAsChosen, overrides how the port sleeps: its
	// peer's Options.Doorbell, or a client's doorbell.
	Sleep Sleep
}

// Sleep is how a port loop sleeps once it has polled in vain.
type Sleep uint8

const (
	// SleepAsChosen leaves it to the port's owner: Options.Doorbell for
	// a peer, the doorbell for a client.
	SleepAsChosen Sleep = iota
	// SleepFutex sleeps on the port's wake word (FUTEX_WAIT).
	SleepFutex
	// SleepDoorbell sleeps on the port's doorbell, in the Go poller
	// (xseg.Port.UseDoorbell).
	SleepDoorbell
)

// spin is how long the loop polls: Spin with its default applied.
func (w Wait) spin() time.Duration {
	switch {
	case w.Spin == 0:
		return DefaultSpin
	case w.Spin < 0:
		return 0
	}
	return w.Spin
}

// doorbell says whether a port sleeps on its doorbell, given its owner's
// choice.
func (w Wait) doorbell(chosen bool) bool {
	switch w.Sleep {
	case SleepFutex:
		return false
	case SleepDoorbell:
		return true
	}
	return chosen
}

// portLoop runs the loop of one bound port: it takes the replies to the
// requests submitted from the port (waking their callers) and, when it
// serves, the requests queued to the port (handing them to serve).
//
// One goroutine, the loop, owns the port's rings; callers only submit.
type portLoop struct {
	port *xseg.Port
	spin time.Duration // polling before sleeping

	// pending[i] is where the reply to the request in slot i goes.
	pending []atomic.Pointer[waiter]

	// serving side; serve is nil for a pure client.
	peer     *Peer                    // the peer serving the port, nil for a client
	serve    func(rs []*xseg.Request) // must not block
	capacity func() int               // how many more requests serve takes now
	// reserve takes up to n of that capacity for requests about to be
	// accepted (local dispatch takes it too, concurrently), unreserve
	// gives back what was not used.
	reserve   func(n int) int
	unreserve func(n int)

	stopping atomic.Bool
	done     chan struct{}
}

func newPortLoop(port *xseg.Port, w Wait, serve func([]*xseg.Request), capacity func() int) *portLoop {
	e := &portLoop{port: port, spin: w.spin(), serve: serve, capacity: capacity, done: make(chan struct{})}
	e.pending = make([]atomic.Pointer[waiter], port.Segment().Requests())
	return e
}

// start runs the loop.
func (e *portLoop) start() { go e.loop() }

func (e *portLoop) loop() {
	defer close(e.done)
	seg := e.port.Segment()
	reqs := make([]*xseg.Request, 64)
	reps := make([]*xseg.Request, 64)
	lastRecover := time.Now()
	for !e.stopping.Load() {
		free := 0
		if e.serve != nil {
			free = min(e.capacity(), len(reqs))
		}
		if !e.port.Pending(free > 0) {
			// Spin a little before sleeping: a reply or request that
			// arrives within e.spin costs no system call on either side.
			t0 := time.Now()
			for i := 1; !e.port.Pending(free > 0); i++ {
				if i%32 == 0 && time.Since(t0) >= e.spin {
					break
				}
				if i%64 == 0 {
					// Let other processes' threads have the CPU: on a
					// small machine the peer we wait for may need it.
					unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
				} else {
					runtime.Gosched()
				}
			}
			e.port.WaitFor(recoverEvery, free > 0)
		}
		if free > 0 {
			if e.port.Queued() > 0 {
				// The capacity read above may be gone to local
				// dispatch meanwhile: take it for real now.
				k := e.reserve(len(reqs))
				rs := e.port.Accept(reqs[:k])
				e.unreserve(k - len(rs))
				if len(rs) > 0 {
					loopsServing.Add(1)
					e.serve(rs)
					loopsServing.Add(-1)
				}
			}
		} else if e.serve == nil && e.port.Queued() > 0 {
			// Nobody serves requests here: answer them rather than let
			// their submitters wait.
			for _, r := range e.port.Accept(reqs) {
				e.port.Respond(r, fmt.Errorf("port %d is a client port: %w", e.port.No(), errs.ErrNotSupported))
			}
		}
		if rs := e.port.Receive(reps); len(rs) > 0 {
			loopsServing.Add(1)
			for _, r := range rs {
				e.deliver(r)
			}
			loopsServing.Add(-1)
		}
		if time.Since(lastRecover) >= recoverEvery {
			seg.Recover()
			lastRecover = time.Now()
		}
	}
}

// waiter is who waits for a reply: a channel, or a function the loop
// calls.
type waiter struct {
	ch chan *xseg.Request
	fn func(*xseg.Request)
}

func (e *portLoop) deliver(r *xseg.Request) {
	w := e.pending[r.Index()].Swap(nil)
	switch {
	case w == nil:
		// A reply nobody waits for (its caller gave up): drop it.
		e.port.Put(r)
	case w.fn != nil:
		w.fn(r)
	default:
		w.ch <- r
	}
}

// submit submits r to port dst and returns the channel its reply will come
// on. On error the request is released.
func (e *portLoop) submit(r *xseg.Request, dst int) (<-chan *xseg.Request, error) {
	w := &waiter{ch: make(chan *xseg.Request, 1)}
	if err := e.submitTo(r, dst, w); err != nil {
		return nil, err
	}
	return w.ch, nil
}

// submitTo submits r to port dst with w waiting for the reply. On error
// the request is released.
func (e *portLoop) submitTo(r *xseg.Request, dst int, w *waiter) error {
	slot := &e.pending[r.Index()]
	slot.Store(w)
	if d := localLoop(e.port, dst); d != nil && e.handOff(r, d) {
		return nil
	}
	if err := e.port.Submit(r, dst); err != nil {
		slot.Store(nil)
		e.port.Put(r)
		return err
	}
	return nil
}

// call submits r to port dst and waits for its reply, which replaces r
// (same slot). If ctx ends first the request is abandoned: its reply will
// be released when it comes. On error the request is released.
func (e *portLoop) call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error) {
	slot := &e.pending[r.Index()]
	ch, err := e.submit(r, dst)
	if err != nil {
		return nil, err
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		if slot.Swap(nil) == nil { // the reply raced in
			e.port.Put(<-ch)
		}
		return nil, ctx.Err()
	case <-e.done:
		return nil, fmt.Errorf("port %d closed: %w", e.port.No(), errs.ErrShutdown)
	}
}

// stop ends the loop. A wake-up that lands while the loop spins, before
// it reads the wake word, would be lost; so it is repeated until the loop
// has ended.
func (e *portLoop) stop() {
	e.stopping.Store(true)
	for {
		e.port.Wake()
		select {
		case <-e.done:
			return
		case <-time.After(time.Millisecond):
		}
	}
}
