package mapper

import (
	"context"

	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// docHandler serves one of the data lifecycle ops (CHECK, GC, USAGE,
// DIFF, FLATTEN, ROLLBACK, TREE): req is the request's wire.Doc (empty if
// the request had no payload); what it returns, if not nil, is encoded as
// JSON into the reply's wire.Doc.
type docHandler func(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error)

// docOps holds the lifecycle ops' handlers; each op's file registers its
// own in an init function.
var docOps = map[xseg.Op]docHandler{}

// serveDoc serves a lifecycle op: ok is false if op is not one.
func (m *Mapper) serveDoc(ctx context.Context, e *volume.Engine, r *xseg.Request) (ok bool, err error) {
	h := docOps[r.Op()]
	if h == nil {
		return false, nil
	}
	var req wire.Doc
	if len(r.Data()) > 0 {
		if err := req.Unmarshal(r.Data()); err != nil {
			return true, err
		}
	}
	out, err := h(ctx, m, e, r, &req)
	if err != nil || out == nil {
		return true, err
	}
	d, err := wire.NewDoc(out)
	if err != nil {
		return true, err
	}
	return true, peer.Reply(r, d)
}
