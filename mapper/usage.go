package mapper

import (
	"context"

	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// USAGE (pool-wide, no target) answers volume.Engine.Usage: the exact
// space of the volumes named in the request's usageRequest (all if none)
// and of the pool, from the maps, as a volume.UsageReport (whose JSON is
// volclient.UsageReport's). Read-only; it takes no lock.
func init() { docOps[xseg.OpUsage] = serveUsage }

// usageRequest is the request's document (volclient.Usage sends it).
type usageRequest struct {
	// Names: the volumes and snapshots to report; none: all.
	Names []string `json:"names"`
	// Held: list the stores too (what they hold, what no header reaches).
	Held bool `json:"held"`
}

func serveUsage(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	var q usageRequest
	if err := req.Decode(&q); err != nil {
		return nil, err
	}
	if len(q.Names) == 0 {
		q.Names = nil
	}
	return e.Usage(ctx, q.Names, volume.UsageOptions{Held: q.Held})
}
