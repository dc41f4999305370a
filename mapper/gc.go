package mapper

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// GC (pool-wide, no target) runs a garbage collection (volume.Engine.GC,
// docs/gc.md) and answers its volume.GCReport; the request's wire.Doc is a
// gcRequest. It may run for minutes: nothing between vlmc and the engine
// bounds it (vlmcd forwards it, the mapper's worker waits), and the
// mapper's other workers serve the requests meanwhile, the status polls
// of the same GC among them.
func init() { docOps[xseg.OpGC] = serveGC }

// gcRequest is the request's document (volclient.GC sends it).
type gcRequest struct {
	DryRun bool `json:"dry_run"`
	// Force breaks the collector's lock held by another host (a host
	// gone, its collection killed). FlagForce says the same.
	Force bool `json:"force"`
	// Status: answer the progress of the collection running here (phase
	// "idle" if none) and start nothing.
	Status bool `json:"status"`
}

// gcReply is the answer of a collection: the engine's report, with the
// object names cut to what the reply's buffer holds (ObjectsOmitted
// counts the rest; the counts stay exact).
type gcReply struct {
	volume.GCReport
	ObjectsOmitted int `json:"objects_omitted,omitempty"`
}

// gcIdle is the phase of the status answer while no collection runs here.
const gcIdle = "idle"

// gcRun is the collection this mapper runs, if any: one at a time per
// mapper (the engine's lock allows one per pool). It also drives the
// periodic collection (CollectEvery).
type gcRun struct {
	mu      sync.Mutex
	running string // "" (none), "requested" or "periodic"
	started time.Time
	prog    volume.GCProgress
}

// begin claims the collector of this mapper for a collection started by
// who; it fails with errs.ErrBusy while one runs.
func (g *gcRun) begin(who string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != "" {
		return fmt.Errorf("a %s garbage collection has been running on this host for %v (phase %s): %w",
			g.running, time.Since(g.started).Round(time.Second), g.prog.Phase, errs.ErrBusy)
	}
	g.running, g.started, g.prog = who, time.Now(), volume.GCProgress{Phase: "starting"}
	return nil
}

func (g *gcRun) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running, g.prog = "", volume.GCProgress{}
}

// update is the engine's GCOptions.Progress.
func (g *gcRun) update(p volume.GCProgress) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != "" {
		g.prog = p
	}
}

// status is the progress of the collection running here, phase "idle"
// if none.
func (g *gcRun) status() volume.GCProgress {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running == "" {
		return volume.GCProgress{Phase: gcIdle}
	}
	return g.prog
}

// collect runs one collection on e for who.
func (m *Mapper) collect(ctx context.Context, e *volume.Engine, who string, o volume.GCOptions) (*volume.GCReport, error) {
	if err := m.gc.begin(who); err != nil {
		return nil, err
	}
	defer m.gc.end()
	o.Progress = m.gc.update
	rep, err := e.GC(ctx, o)
	var h errs.LockHolder
	if errors.As(err, &h) {
		// Said whole here, without the holder's reply (that would read
		// `volume "": locked by X`): the collector's lock is not a
		// volume's, and only force breaks it.
		return nil, fmt.Errorf("garbage collection running on host %s; if that host is gone for good (its collection killed), "+
			"break its lock with force (vlmc gc --force): %w", h.LockHolder(), errs.ErrLocked)
	}
	if err != nil {
		return nil, err
	}
	return rep, nil
}

func serveGC(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	var q gcRequest
	if err := req.Decode(&q); err != nil {
		return nil, err
	}
	if q.Status {
		return m.gc.status(), nil
	}
	rep, err := m.collect(ctx, e, "requested", volume.GCOptions{DryRun: q.DryRun, Force: q.Force || r.Flags()&xseg.FlagForce != 0})
	if err != nil {
		return nil, err
	}
	return fitGCReply(rep, len(r.Buffer()))
}

// fitGCReply returns the reply of rep cut to a buffer of n bytes: object
// names are left out (from the end) until it fits.
func fitGCReply(rep *volume.GCReport, n int) (*gcReply, error) {
	out := &gcReply{GCReport: *rep}
	all := rep.Objects
	keep := len(all)
	for {
		out.Objects, out.ObjectsOmitted = all[:keep], len(all)-keep
		d, err := wire.NewDoc(out)
		if err != nil {
			return nil, err
		}
		if d.EncodedSize() <= n || keep == 0 {
			return out, nil
		}
		// Shrink in proportion to the excess, at least by one.
		keep = min(keep-1, keep*n/d.EncodedSize())
	}
}

// Periodic collection.

// gcJitter is the spread of the periodic collection's interval: each wait
// is the interval ± a quarter, so that hosts started together do not
// all try at once (the lock lets one collect; the others find it taken).
const gcJitter = 4

// gcStopWait is how long the end of the periodic collection waits for a
// collection it cancelled before it says so; it waits on: the collection
// uses the peer, which must not stop under it (in a host process the
// segment would be unmapped under it).
const gcStopWait = 10 * time.Second

// CollectEvery starts collecting garbage every interval d (jittered by a
// quarter either way), without force, on the engine the mapper serves
// through p, and returns the function that stops it (called at SIGTERM,
// before the peer stops; it cancels a collection in progress and waits
// for it to end). A failure is logged and the next interval tries
// again; a collection running on another host, or one a request runs
// here, is no failure (level info).
func (m *Mapper) CollectEvery(p *peer.Peer, d time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	log := p.Logger()
	log.Info("periodic garbage collection", "interval", d)
	go func() {
		defer close(done)
		for {
			wait := d - d/gcJitter + time.Duration(rand.Int64N(int64(2*(d/gcJitter))+1))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			e, err := m.engine(p)
			if err != nil {
				log.Error("periodic garbage collection: no engine", "err", err)
				continue
			}
			t0 := time.Now()
			rep, err := m.collect(ctx, e, "periodic", volume.GCOptions{})
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errs.ErrLocked) || errors.Is(err, errs.ErrBusy):
				log.Info("periodic garbage collection: skipped", "reason", err, "next_in", d)
			case err != nil:
				log.Error("periodic garbage collection failed; will try again", "err", err, "next_in", d)
			default:
				log.Info("periodic garbage collection", "deleted", rep.Deleted, "bytes", rep.Bytes,
					"listed", rep.Listed, "volumes", rep.Volumes, "reachable", rep.Reachable,
					"protected", rep.Protected, "markers_deleted", rep.MarkersDeleted,
					"problems", len(rep.Problems), "took", time.Since(t0).Round(time.Millisecond))
				for _, pr := range rep.Problems {
					log.Warn("periodic garbage collection", "problem", pr)
				}
			}
		}
	}()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(gcStopWait):
			log.Warn("periodic garbage collection still running at stop; waiting for it", "waited", gcStopWait)
			<-done
		}
	}
}
