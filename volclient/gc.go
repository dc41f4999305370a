package volclient

import (
	"context"
	"time"

	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// GCOptions shape a garbage collection (Client.GC).
type GCOptions struct {
	// DryRun lists and counts what would be deleted, and deletes nothing.
	DryRun bool
	// Force breaks the collector's lock that another host holds: use it
	// only once that host is gone (its collection was killed), as
	// UnlockForce for a volume.
	Force bool
	// Progress, if set, is called with the collection's progress about
	// every PollInterval (from the goroutine that called GC), read with
	// GCStatus while the collection runs.
	Progress func(GCProgress)
	// PollInterval is how often Progress is fed (default 250 ms).
	PollInterval time.Duration
	// PollTimeout bounds each status poll (default 30 s); a poll that
	// fails is skipped. The collection itself is bound only by ctx.
	PollTimeout time.Duration
}

// GCProgress is how far the collection running on this host is: its phase
// ("idle" when none runs; then the counts are zero) and what it counted so
// far. Its JSON form is what `vlmc gc --status --json` prints.
type GCProgress struct {
	// Phase: "idle", or the collection's: listing, records, marking,
	// markers, sweeping, done.
	Phase string `json:"phase"`
	// Listed: objects of the pool listed so far.
	Listed int `json:"listed"`
	// Volumes: headers (volumes and snapshots) walked so far.
	Volumes int `json:"volumes"`
	// Reachable: objects found reachable so far.
	Reachable int `json:"reachable"`
	// Candidates: objects listed that no header reached, to delete
	// (known from the sweeping phase on).
	Candidates int `json:"candidates"`
	// Deleted: objects deleted so far (counted, with DryRun).
	Deleted int `json:"deleted"`
	// Bytes: their size.
	Bytes int64 `json:"bytes"`
}

// GCIdle is the Phase of GCStatus while no collection runs on this host.
const GCIdle = "idle"

// GCReport is what a garbage collection did (docs/gc.md). Its JSON form
// is what `vlmc gc --json` prints.
type GCReport struct {
	// DryRun: nothing was deleted; Deleted and Objects say what would be.
	DryRun bool `json:"dry_run"`
	// Listed: map pages and data objects listed (the candidates of the
	// collection; headers, epoch records, locks and markers are never
	// candidates).
	Listed int `json:"listed"`
	// Volumes: headers walked (volumes and snapshots, those the root
	// markers named included).
	Volumes int `json:"volumes"`
	// Reachable: objects some header reaches.
	Reachable int `json:"reachable"`
	// Protected: unreachable objects kept because an operation in flight
	// may still link them (an epoch being written, a volume's allocation
	// identity), or whose volume has no epoch record.
	Protected int `json:"protected"`
	// Deleted objects (or, with DryRun, objects it would delete): map
	// pages (DeletedPages) and data objects (DeletedData).
	Deleted      int `json:"deleted"`
	DeletedPages int `json:"deleted_pages"`
	DeletedData  int `json:"deleted_data"`
	// Bytes the deleted objects held.
	Bytes int64 `json:"bytes"`
	// Objects, with DryRun, are the names of the objects it would delete.
	Objects []string `json:"objects,omitempty"`
	// ObjectsOmitted counts the names left out of Objects so that the
	// answer fits its buffer (the counts above stay exact).
	ObjectsOmitted int `json:"objects_omitted,omitempty"`
	// Markers: root markers processed (archip_root_<name>, left by
	// snapshot, clone, rename and rollback); MarkersDeleted: those of
	// operations over, deleted.
	Markers        int `json:"markers"`
	MarkersDeleted int `json:"markers_deleted"`
	// Rounds: listings of the markers until one found nothing new.
	Rounds int `json:"rounds"`
	// Problems the collection found and left alone (an object of a
	// volume without an epoch record, say), one line each.
	Problems []string `json:"problems,omitempty"`
}

// gcRequest is the GC request's document (mapper/gc.go reads it).
type gcRequest struct {
	DryRun bool `json:"dry_run,omitempty"`
	Force  bool `json:"force,omitempty"`
	Status bool `json:"status,omitempty"`
}

// gcReplyBuf is the buffer of a collection's request: room for the report
// with some 60,000 object names; the mapper leaves out what does not fit
// (ObjectsOmitted). A collection is never sent twice for a larger buffer.
const gcReplyBuf = 4 << 20

// GC collects the garbage of the pool: the map pages and data objects
// that no volume or snapshot reaches (removed volumes and snapshots,
// leftovers of crashes and of operations that failed half-way), online,
// while volumes are written, snapshotted, cloned, renamed and removed
// here and on other hosts (docs/gc.md). One collection runs per pool at
// a time: while another host's runs, GC fails with errs.ErrLocked naming
// that host (o.Force breaks its lock, for a host gone); while another
// runs on this host, with errs.ErrBusy. It may take minutes: only ctx
// bounds it.
func (c *Client) GC(ctx context.Context, o GCOptions) (*GCReport, error) {
	var fl xseg.Flags
	if o.Force {
		fl |= xseg.FlagForce
	}
	d, err := wire.NewDoc(gcRequest{DryRun: o.DryRun, Force: o.Force})
	if err != nil {
		return nil, err
	}
	var rep GCReport
	var poll func()
	if o.Progress != nil {
		poll = func() {
			if p, err := c.gcStatus(ctx, o.PollTimeout); err == nil && p.Phase != GCIdle {
				o.Progress(p)
			}
		}
	}
	every := o.PollInterval
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	err = whilePolling(func() error {
		return c.Do(ctx, Call{Op: xseg.OpGC, Flags: fl, Payload: d, BufLen: gcReplyBuf, Got: docReply(&rep)})
	}, every, poll)
	if err != nil {
		return nil, poolError("GC", "garbage collection", err)
	}
	return &rep, nil
}

// GCStatus returns the progress of the collection running on this host
// (Phase GCIdle if none), as GC's Progress sees it: a second program may
// watch a collection that another started.
func (c *Client) GCStatus(ctx context.Context) (GCProgress, error) {
	var p GCProgress
	err := c.docCall(ctx, xseg.OpGC, "", 0, true, gcRequest{Status: true}, &p)
	if err != nil {
		return GCProgress{}, poolError("GC", "garbage collection", err)
	}
	return p, nil
}

func (c *Client) gcStatus(ctx context.Context, timeout time.Duration) (GCProgress, error) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.GCStatus(ctx)
}
