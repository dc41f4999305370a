package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// recoverEvery is how often an endpoint looks for dead processes' leftovers
// in the segment while it waits.
const recoverEvery = 500 * time.Millisecond

// endpoint runs the loop of one bound port: it takes the replies to the
// requests submitted from the port (waking their callers) and, when it
// serves, the requests queued to the port (handing them to serve).
//
// One goroutine, the loop, owns the port's rings; callers only submit.
type endpoint struct {
	port *xseg.Port

	mu      sync.Mutex // guards pending
	pending map[int]chan *xseg.Request

	// serving side; serve is nil for a pure client.
	serve    func(r *xseg.Request) // must not block
	capacity func() int            // how many more requests serve takes now

	stopping atomic.Bool
	done     chan struct{}
}

func newEndpoint(port *xseg.Port, serve func(*xseg.Request), capacity func() int) *endpoint {
	e := &endpoint{port: port, pending: map[int]chan *xseg.Request{}, serve: serve, capacity: capacity, done: make(chan struct{})}
	go e.loop()
	return e
}

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
		e.port.WaitFor(recoverEvery, free > 0)
		if free > 0 {
			for _, r := range e.port.Accept(reqs[:free]) {
				e.serve(r)
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

func (e *endpoint) deliver(r *xseg.Request) {
	e.mu.Lock()
	ch, ok := e.pending[r.Index()]
	delete(e.pending, r.Index())
	e.mu.Unlock()
	if !ok {
		// A reply nobody waits for (its caller gave up): drop it.
		e.port.Put(r)
		return
	}
	ch <- r
}

// call submits r to port dst and waits for its reply, which replaces r
// (same slot). If ctx ends first the request is abandoned: its reply will
// be released when it comes. On error the request is released.
func (e *endpoint) call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error) {
	ch := make(chan *xseg.Request, 1)
	idx := r.Index()
	e.mu.Lock()
	e.pending[idx] = ch
	e.mu.Unlock()
	if err := e.port.Submit(r, dst); err != nil {
		e.mu.Lock()
		delete(e.pending, idx)
		e.mu.Unlock()
		e.port.Put(r)
		return nil, err
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		e.mu.Lock()
		_, still := e.pending[idx]
		delete(e.pending, idx)
		e.mu.Unlock()
		if !still { // the reply raced in
			e.port.Put(<-ch)
		}
		return nil, ctx.Err()
	case <-e.done:
		return nil, fmt.Errorf("port %d closed: %w", e.port.No(), errs.ErrShutdown)
	}
}

func (e *endpoint) stop() {
	e.stopping.Store(true)
	e.port.Wake()
	<-e.done
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

// NewClient binds a dynamic port of a segment the caller has joined.
func NewClient(seg *xseg.Segment) (*Client, error) {
	p, err := seg.BindDynamic()
	if err != nil {
		return nil, err
	}
	return &Client{seg: seg, ep: newEndpoint(p, nil, nil)}, nil
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
