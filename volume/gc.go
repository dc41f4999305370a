package volume

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// GCOptions shape one collection.
type GCOptions struct {
	DryRun   bool             // find and count, delete nothing
	Force    bool             // break another host's collector lock (its host is gone)
	Progress func(GCProgress) // called now and then (may be nil)
}

// GCProgress is where a collection is.
type GCProgress struct {
	Phase      string `json:"phase"`      // "listing", "records", "marking", "markers", "sweeping", "done"
	Listed     int    `json:"listed"`     // objects listed (candidates so far)
	Volumes    int    `json:"volumes"`    // headers walked
	Reachable  int    `json:"reachable"`  // objects marked
	Candidates int    `json:"candidates"` // unreached, to delete (known from sweeping on)
	Deleted    int    `json:"deleted"`
	Bytes      int64  `json:"bytes"` // of what was deleted
}

// GCReport is what a collection found and did.
type GCReport struct {
	DryRun         bool     `json:"dry_run"`
	Listed         int      `json:"listed"`  // map pages and data objects listed
	Volumes        int      `json:"volumes"` // headers walked (markers included)
	Reachable      int      `json:"reachable"`
	Protected      int      `json:"protected"` // unreached but kept: an operation in flight may link them
	Deleted        int      `json:"deleted"`   // (dry run: would be deleted)
	DeletedPages   int      `json:"deleted_pages"`
	DeletedData    int      `json:"deleted_data"`
	Bytes          int64    `json:"bytes"`             // bytes of what was (would be) deleted
	Objects        []string `json:"objects,omitempty"` // dry run: the objects it would delete
	Markers        int      `json:"markers"`           // root markers processed; MarkersDeleted of them removed
	MarkersDeleted int      `json:"markers_deleted"`
	Rounds         int      `json:"rounds"`
	Problems       []string `json:"problems,omitempty"` // e.g. objects of a prefix with no epoch record (kept)
}

// GC collects garbage: the map pages and data objects no header reaches
// and no operation in flight may still link (docs/gc.md).
func (e *Engine) GC(ctx context.Context, o GCOptions) (*GCReport, error) {
	return nil, fmt.Errorf("gc: not implemented yet: %w", errs.ErrNotSupported)
}
