package mapper

import (
	"context"

	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// FLATTEN of a volume (the target) copies the blocks of a range that it
// shares to objects of its own (volume.Engine.Flatten), or, with done,
// ends the flatten (FlattenDone: checks that nothing is shared and clears
// the parent). The client drives the ranges (volclient.Flatten), so that
// each request stays short and progress shows. vlmcd drops its cached
// mappings of the volume before it forwards the request.
func init() { docOps[xseg.OpFlatten] = serveFlatten }

// flattenRequest is the request's document (volclient.Flatten sends it).
type flattenRequest struct {
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	Done   bool   `json:"done"`
}

// flattenReply: the bytes of blocks the range made the volume's own.
type flattenReply struct {
	Copied uint64 `json:"copied"`
}

func serveFlatten(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	var q flattenRequest
	if err := req.Decode(&q); err != nil {
		return nil, err
	}
	if q.Done {
		return flattenReply{}, e.FlattenDone(ctx, r.Target())
	}
	n, err := e.Flatten(ctx, r.Target(), q.Offset, q.Length)
	if err != nil {
		return nil, err
	}
	return flattenReply{Copied: n}, nil
}
