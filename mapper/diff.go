package mapper

import (
	"context"

	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// DIFF (target: a volume or snapshot) answers one part of
// volume.Engine.DiffPart: the extents of the target that differ from the
// snapshot the request names, from the maps alone. Read-only; it takes no
// lock. A reply holds at most diffMaxExtents extents and covers a bounded
// number of map pages: volclient.Client.Diff asks part after part.
func init() { docOps[xseg.OpDiff] = serveDiff }

// diffMaxExtents bounds the extents of one reply (about 30 KiB of JSON).
const diffMaxExtents = 512

// diffRequest is the request's document (volclient's diffRequest).
type diffRequest struct {
	// From is the snapshot to compare with, "" for none.
	From string `json:"from"`
	// Offset and Length: the range of the target, Length 0 up to its end.
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	// Max: the most extents wanted (0, or more than diffMaxExtents: that).
	Max int `json:"max"`
}

// diffExtent and diffReply are the reply's document (volclient's
// DiffExtent and diffReply).
type diffExtent struct {
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"length"`
	Zero   bool   `json:"zero"`
}

type diffReply struct {
	Extents []diffExtent `json:"extents"`
	// Next is where the next part starts (Size when done).
	Next     uint64 `json:"next"`
	Size     uint64 `json:"size"`
	FromSize uint64 `json:"from_size"`
}

func serveDiff(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	var q diffRequest
	if err := req.Decode(&q); err != nil {
		return nil, err
	}
	n := q.Length
	if n == 0 {
		n = ^uint64(0)
	}
	if q.Max <= 0 || q.Max > diffMaxExtents {
		q.Max = diffMaxExtents
	}
	p, err := e.DiffPart(ctx, r.Target(), q.From, q.Offset, n, q.Max)
	if err != nil {
		return nil, err
	}
	rep := diffReply{Extents: make([]diffExtent, len(p.Extents)), Next: p.Next, Size: p.Size, FromSize: p.FromSize}
	for i, x := range p.Extents {
		rep.Extents[i] = diffExtent{Offset: x.Offset, Size: x.Size, Zero: x.Zero}
	}
	return rep, nil
}
