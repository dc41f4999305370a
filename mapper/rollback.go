package mapper

import (
	"context"

	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// ROLLBACK of a volume (the target) to a snapshot
// (volume.Engine.Rollback): refused while the volume has sessions here,
// is open or locked here, or is locked by another host. Sessions of
// processes that died are dropped first, as for a remove.
func init() { docOps[xseg.OpRollback] = serveRollback }

// rollbackRequest is the request's document (volclient.Rollback sends it).
type rollbackRequest struct {
	Snapshot string `json:"snapshot"`
}

func serveRollback(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	var q rollbackRequest
	if err := req.Decode(&q); err != nil {
		return nil, err
	}
	m.reap(ctx) // a dead process's sessions do not count
	return nil, e.Rollback(ctx, r.Target(), q.Snapshot)
}
