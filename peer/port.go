package peer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// recoverEvery is how often an endpoint looks for dead processes' leftovers
// in the segment while it waits.
const recoverEvery = 500 * time.Millisecond

// spinFor is how long an endpoint polls its rings before it sleeps.
var spinFor = func() time.Duration {
	if us, err := strconv.Atoi(os.Getenv("ARCHIPELAGO_SPIN_US")); err == nil {
		return time.Duration(us) * time.Microsecond
	}
	return 5 * time.Microsecond
}()

// endpoint runs the loop of one bound port: it takes the replies to the
// requests submitted from the port (waking their callers) and, when it
// serves, the requests queued to the port (handing them to serve).
//
// One goroutine, the loop, owns the port's rings; callers only submit.
type endpoint struct {
	port *xseg.Port

	// pending[i] is where the reply to the request in slot i goes.
	pending []atomic.Pointer[waiter]

	// serving side; serve is nil for a pure client.
	serve    func(rs []*xseg.Request) // must not block
	capacity func() int               // how many more requests serve takes now

	stopping atomic.Bool
	done     chan struct{}
}

func newEndpoint(port *xseg.Port, serve func([]*xseg.Request), capacity func() int) *endpoint {
	e := &endpoint{port: port, serve: serve, capacity: capacity, done: make(chan struct{})}
	e.pending = make([]atomic.Pointer[waiter], port.Segment().Requests())
	return e
}

// start runs the endpoint's loop.
func (e *endpoint) start() { go e.loop() }

func (e *endpoint) loop() {
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
			// arrives within spinFor costs no system call on either side.
			t0 := time.Now()
			for i := 1; !e.port.Pending(free > 0); i++ {
				if i%32 == 0 && time.Since(t0) >= spinFor {
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
			if rs := e.port.Accept(reqs[:free]); len(rs) > 0 {
				e.serve(rs)
			}
		} else if e.serve == nil && e.port.Queued() > 0 {
			// Nobody serves requests here: answer them rather than let
			// their submitters wait.
			for _, r := range e.port.Accept(reqs) {
				e.port.Respond(r, fmt.Errorf("port %d is a client port: %w", e.port.No(), errs.ErrNotSupported))
			}
		}
		for _, r := range e.port.Receive(reps) {
			e.deliver(r)
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

func (e *endpoint) deliver(r *xseg.Request) {
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
func (e *endpoint) submit(r *xseg.Request, dst int) (<-chan *xseg.Request, error) {
	w := &waiter{ch: make(chan *xseg.Request, 1)}
	if err := e.submitTo(r, dst, w); err != nil {
		return nil, err
	}
	return w.ch, nil
}

// submitTo submits r to port dst with w waiting for the reply. On error
// the request is released.
func (e *endpoint) submitTo(r *xseg.Request, dst int, w *waiter) error {
	slot := &e.pending[r.Index()]
	slot.Store(w)
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
func (e *endpoint) call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error) {
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
func (e *endpoint) stop() {
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

// Client submits requests to peers through a dynamic port of a segment.
// It is what tools and tests use; a Peer has the same calls for the
// requests it makes itself.
type Client struct {
	seg *xseg.Segment
	ep  *endpoint
	own bool // Client joined the segment and closes it
}

// Dial joins the named segment and binds a dynamic port.
func Dial(segment string) (*Client, error) {
	seg, err := xseg.Join(segment)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, fmt.Errorf("%w: start it with `archipelago start`", err)
		}
		return nil, err
	}
	c, err := NewClient(seg)
	if err != nil {
		seg.Close()
		return nil, err
	}
	c.own = true
	return c, nil
}

// NewClient binds a dynamic port of a segment the caller has joined. The
// port sleeps on a doorbell (xseg.Port.UseDoorbell; ARCHIPELAGO_DOORBELL=0
// says the futex): a client lives in a program whose other goroutines
// (a FUSE server, a command's work) a futex sleep would hold up.
func NewClient(seg *xseg.Segment) (*Client, error) {
	p, err := seg.BindDynamic()
	if err != nil {
		return nil, err
	}
	if useDoorbell(true) {
		p.UseDoorbell() // on failure the futex serves
	}
	ep := newEndpoint(p, nil, nil)
	ep.start()
	return &Client{seg: seg, ep: ep}, nil
}

// Port is the client's port number.
func (c *Client) Port() int { return c.ep.port.No() }

// Segment is the segment the client talks through.
func (c *Client) Segment() *xseg.Segment { return c.seg }

// Alloc takes a request with a buffer of n bytes.
func (c *Client) Alloc(n int) (*xseg.Request, error) { return c.ep.port.Alloc(n) }

// Put releases a request (after a reply).
func (c *Client) Put(r *xseg.Request) { c.ep.port.Put(r) }

// Call submits r to port dst and returns its reply (the same slot). The
// caller Puts the reply. The reply's Err() is the server's answer.
func (c *Client) Call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error) {
	return c.ep.call(ctx, r, dst)
}

// Close releases the port (and the segment mapping if Dial made it).
func (c *Client) Close() error {
	c.ep.stop()
	c.ep.port.Release()
	if c.own {
		return c.seg.Close()
	}
	return nil
}
