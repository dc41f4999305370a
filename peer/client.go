package peer

import (
	"context"
	"errors"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// Client submits requests to peers through a dynamic port of a segment.
// It is what tools and tests use; a Peer has the same calls for the
// requests it makes itself.
type Client struct {
	seg  *xseg.Segment
	loop *portLoop
	own  bool // Client joined the segment and closes it
}

// ClientOptions are a client's settings; the zero value is the default.
type ClientOptions struct {
	// Wait tunes how the client's port loop waits for replies (by
	// default it polls for DefaultSpin, then sleeps on the doorbell).
	Wait Wait
}

// Dial joins the named segment and binds a dynamic port, with the
// default ClientOptions.
func Dial(segment string) (*Client, error) { return DialWith(segment, ClientOptions{}) }

// DialWith joins the named segment and binds a dynamic port.
func DialWith(segment string, o ClientOptions) (*Client, error) {
	seg, err := xseg.Join(segment)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, fmt.Errorf("%w: start it with `archipelago start`", err)
		}
		return nil, err
	}
	c, err := NewClientWith(seg, o)
	if err != nil {
		seg.Close()
		return nil, err
	}
	c.own = true
	return c, nil
}

// NewClient binds a dynamic port of a segment the caller has joined, with
// the default ClientOptions.
func NewClient(seg *xseg.Segment) (*Client, error) { return NewClientWith(seg, ClientOptions{}) }

// NewClientWith binds a dynamic port of a segment the caller has joined.
// Unless o.Wait.Sleep says the futex, the port sleeps on a doorbell
// (xseg.Port.UseDoorbell): a client lives in a program whose other
// goroutines (a FUSE server, a command's work) a futex sleep would hold
// up.
func NewClientWith(seg *xseg.Segment, o ClientOptions) (*Client, error) {
	p, err := seg.BindDynamic()
	if err != nil {
		return nil, err
	}
	if o.Wait.doorbell(true) {
		p.UseDoorbell() // on failure the futex serves
	}
	loop := newPortLoop(p, o.Wait, nil, nil)
	loop.start()
	register(loop)
	return &Client{seg: seg, loop: loop}, nil
}

// Port is the client's port number.
func (c *Client) Port() int { return c.loop.port.No() }

// Segment is the segment the client talks through.
func (c *Client) Segment() *xseg.Segment { return c.seg }

// Alloc takes a request with a buffer of n bytes.
func (c *Client) Alloc(n int) (*xseg.Request, error) { return c.loop.port.Alloc(n) }

// Put releases a request (after a reply).
func (c *Client) Put(r *xseg.Request) { c.loop.port.Put(r) }

// Call submits r to port dst and returns its reply (the same slot). The
// caller Puts the reply. The reply's Err() is the server's answer.
func (c *Client) Call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error) {
	return c.loop.call(ctx, r, dst)
}

// Close releases the port (and the segment mapping if Dial made it).
func (c *Client) Close() error {
	unregister(c.loop)
	c.loop.stop()
	c.loop.port.Release()
	if c.own {
		return c.seg.Close()
	}
	return nil
}
