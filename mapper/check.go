package mapper

import (
	"context"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// CHECK (pool-wide; a target, if any, is one more volume to check)
// answers volume.Engine.CheckVolumes for the volumes named in the
// request's checkRequest (all if none) as a volume.CheckReport (whose
// JSON is volclient.CheckReport's). Read-only: it takes no lock and
// repairs nothing, so it runs beside the volumes' I/O. A request with
// Status answers the progress of the check of that ID running here
// (volclient.CheckProgress; zero if none). A long check also logs its
// progress every checkLogEvery.
func init() { docOps[xseg.OpCheck] = serveCheck }

// checkRequest is the request's document (volclient.Check sends it).
type checkRequest struct {
	// Names: the volumes and snapshots to check; none: all.
	Names []string `json:"names"`
	// ID names the check for Status requests.
	ID string `json:"id"`
	// Status: answer the progress of the check of this ID.
	Status string `json:"status"`
}

// checkProgress is volclient.CheckProgress.
type checkProgress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
}

// checksRunning: check ID -> *checkProgress, guarded by checksMu.
var (
	checksMu      sync.Mutex
	checksRunning = map[string]*checkProgress{}
)

const checkLogEvery = 10 * time.Second

func serveCheck(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	var q checkRequest
	if err := req.Decode(&q); err != nil {
		return nil, err
	}
	if q.Status != "" {
		checksMu.Lock()
		defer checksMu.Unlock()
		if p := checksRunning[q.Status]; p != nil {
			return *p, nil
		}
		return checkProgress{}, nil
	}
	if r.Target() != "" {
		q.Names = append(q.Names, r.Target())
	}
	if len(q.Names) == 0 {
		q.Names = nil
	}
	if q.ID != "" {
		checksMu.Lock()
		checksRunning[q.ID] = &checkProgress{}
		checksMu.Unlock()
		defer func() {
			checksMu.Lock()
			delete(checksRunning, q.ID)
			checksMu.Unlock()
		}()
	}
	start := time.Now()
	last := start
	rep, err := e.CheckVolumes(ctx, q.Names, func(done, total int) {
		if q.ID != "" {
			checksMu.Lock()
			*checksRunning[q.ID] = checkProgress{Done: done, Total: total}
			checksMu.Unlock()
		}
		if time.Since(last) >= checkLogEvery {
			last = time.Now()
			m.p.Logger().Info("check in progress", "volumes", done, "of", total,
				"elapsed", time.Since(start).Round(time.Second))
		}
	})
	if err != nil {
		return nil, err
	}
	if n := len(rep.Problems) + rep.Omitted; n > 0 {
		m.p.Logger().Warn("check found problems", "problems", n, "volumes", rep.Volumes)
	}
	return rep, nil
}
