package volclient

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// docCall sends one of the data lifecycle ops (CHECK, GC, USAGE, DIFF,
// FLATTEN, ROLLBACK, TREE) about target: req (if not nil) as a wire.Doc,
// and decodes the reply's wire.Doc into resp (if not nil). A reply larger
// than the buffer is asked for again with a larger one (up to
// wire.MaxDocLen), so callers need not guess.
func (c *Client) docCall(ctx context.Context, op xseg.Op, target string, fl xseg.Flags, readOnly bool, req, resp any) error {
	n := 1 << 20
	if readOnly {
		n = 64 << 10
	}
	return c.docCallFrom(ctx, op, target, fl, readOnly, n, req, resp)
}

// maxDocBuf holds the largest reply: a wire.Doc of wire.MaxDocLen.
const maxDocBuf = wire.MaxDocLen + wire.HeaderSize + 4

// docCallFrom is docCall with a first buffer of n bytes.
func (c *Client) docCallFrom(ctx context.Context, op xseg.Op, target string, fl xseg.Flags, readOnly bool, n int, req, resp any) error {
	var p wire.Payload
	if req != nil {
		d, err := wire.NewDoc(req)
		if err != nil {
			return err
		}
		p = d
	}
	for ; ; n = min(4*n, maxDocBuf) {
		err := c.Do(ctx, Call{Op: op, Target: target, Flags: fl, Payload: p, BufLen: n,
			Got: func(r *xseg.Request) error {
				if resp == nil || len(r.Data()) == 0 {
					return nil
				}
				return docReply(resp)(r)
			}})
		if readOnly && errors.Is(err, errs.ErrNoSpace) && n < maxDocBuf {
			continue
		}
		return err
	}
}

// docReply is a Call.Got that decodes the reply's wire.Doc into v.
func docReply(v any) func(r *xseg.Request) error {
	return func(r *xseg.Request) error {
		var d wire.Doc
		if err := d.Unmarshal(r.Data()); err != nil {
			return err
		}
		return d.Decode(v)
	}
}

// whilePolling runs call and, if poll is set, calls poll every `every`
// until call returns; it returns call's error. (A long request — a check,
// a collection — and the status requests that show its progress.)
func whilePolling(call func() error, every time.Duration, poll func()) error {
	if poll == nil {
		return call()
	}
	done := make(chan error, 1)
	go func() { done <- call() }()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			poll()
		}
	}
}

// reqCtx bounds one request by timeout, if set.
func reqCtx(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

// poolError says "<what>: <why>" for an op about the whole pool, without
// the empty target that the mapper's and the client's messages name
// (`OP "": `, `volume "": `), keeping the error's chain.
func poolError(op, what string, err error) error {
	msg := err.Error()
	var re *peer.RemoteError
	if errors.As(err, &re) {
		msg = re.Msg
	}
	msg = strings.TrimPrefix(strings.TrimPrefix(msg, op+` "": `), `volume "": `)
	if !strings.HasPrefix(msg, what) {
		msg = what + ": " + msg
	}
	return &peer.RemoteError{Msg: msg, Err: err}
}
