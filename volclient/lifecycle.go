package volclient

import (
	"context"
	"errors"
	"strings"

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
	var p wire.Payload
	if req != nil {
		d, err := wire.NewDoc(req)
		if err != nil {
			return err
		}
		p = d
	}
	n := 1 << 20
	if readOnly {
		n = 64 << 10
	}
	for ; ; n *= 4 {
		err := c.Do(ctx, Call{Op: op, Target: target, Flags: fl, Payload: p, BufLen: n,
			Got: func(r *xseg.Request) error {
				if resp == nil || len(r.Data()) == 0 {
					return nil
				}
				var d wire.Doc
				if err := d.Unmarshal(r.Data()); err != nil {
					return err
				}
				return d.Decode(resp)
			}})
		if readOnly && errors.Is(err, errs.ErrNoSpace) && n < wire.MaxDocLen+wire.HeaderSize+4 {
			continue
		}
		return err
	}
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
