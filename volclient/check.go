package volclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/archipelago-go/archipelago/xseg"
)

// The kinds of problem a check reports (CheckProblem.Kind; docs/maps.md,
// "Checking").
const (
	// ProblemUnreadable: a header, map page or epoch record exists but no
	// copy of it can be read (both damaged, truncated, bad contents).
	ProblemUnreadable = "unreadable"
	// ProblemDangling: a map entry or a header names a map page that does
	// not exist (or holds nothing).
	ProblemDangling = "dangling"
	// ProblemDamagedCopy: one of the two copies of a map object is
	// damaged, torn, missing or stale; the other is read (nothing is
	// lost, the redundancy is), until the engine rewrites it.
	ProblemDamagedCopy = "damaged-copy"
	// ProblemOwnedBelowShared: a page the volume owns (writes in place)
	// below a page it does not own.
	ProblemOwnedBelowShared = "owned-below-shared"
	// ProblemOwnedTwice: an object two volumes own.
	ProblemOwnedTwice = "owned-twice"
	// ProblemOwnedShared: the volume reaches an object another one owns.
	ProblemOwnedShared = "owned-shared"
	// ProblemBeyondSize: a map entry past the volume's size.
	ProblemBeyondSize = "beyond-size"
	// ProblemBadPrefix: a map entry whose prefix is not in the header's
	// table.
	ProblemBadPrefix = "bad-prefix"
	// ProblemMissingData: a mapped data object that does not exist (the
	// block reads as zeros: data lost, or a first write cut by a crash).
	ProblemMissingData = "missing-data"
	// ProblemEpochBehind: an epoch record below an epoch in use.
	ProblemEpochBehind = "epoch-behind"
	// ProblemEpochMissing: no epoch record for a name in use.
	ProblemEpochMissing = "epoch-missing"
)

// CheckProblem is one violation a check found: Kind (a Problem…
// constant) at Object (a header, map page, epoch record or data object)
// found while checking Volume.
type CheckProblem struct {
	Volume string `json:"volume"`
	Object string `json:"object"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// CheckReport is what a check found. Its JSON form is what `vlmc check
// --json` prints.
type CheckReport struct {
	// Volumes checked (volumes and snapshots), map pages read and mapped
	// data objects looked for (shared ones counted once).
	Volumes     int `json:"volumes"`
	Pages       int `json:"pages"`
	DataObjects int `json:"data_objects"`
	// Problems, sorted by volume, object and kind; at most 100 of one
	// kind per volume are listed, Omitted counts the others.
	Problems []CheckProblem `json:"problems"`
	Omitted  int            `json:"omitted,omitempty"`
}

// Found is the number of problems found, listed or not.
func (r *CheckReport) Found() int { return len(r.Problems) + r.Omitted }

// CheckProgress is how far a check is: volumes done of Total (0 until the
// check has listed them).
type CheckProgress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
}

// checkRequest is the CHECK request's document (mapper/check.go reads
// it): a check of Names (all if none), known by ID to Status requests;
// or, with Status set, the progress of the check of that ID.
type checkRequest struct {
	Names  []string `json:"names,omitempty"`
	ID     string   `json:"id,omitempty"`
	Status string   `json:"status,omitempty"`
}

// checkReplyBuf is the buffer of a check's reply: room for thousands of
// problems; a larger report is asked for again with a larger buffer.
const checkReplyBuf = 1 << 20

// Check checks the maps of the volumes and snapshots named (all if
// names is empty), read-only and online (docs/maps.md, "Checking"): every
// violation found is a CheckProblem of the report, not an error. A name
// of no volume fails with errs.ErrNotFound. It may take long on a large
// pool: only ctx bounds it.
func (c *Client) Check(ctx context.Context, names []string) (*CheckReport, error) {
	return c.CheckProgress(ctx, names, nil)
}

// CheckProgress is Check that calls progress about every 250 ms (from the
// calling goroutine) with how far the check is.
func (c *Client) CheckProgress(ctx context.Context, names []string, progress func(CheckProgress)) (*CheckReport, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	q := checkRequest{Names: names, ID: hex.EncodeToString(id[:])}
	var rep CheckReport
	var poll func()
	if progress != nil {
		poll = func() {
			var p CheckProgress
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if c.docCall(pctx, xseg.OpCheck, "", 0, true, checkRequest{Status: q.ID}, &p) == nil && p.Total > 0 {
				progress(p)
			}
			cancel()
		}
	}
	err := whilePolling(func() error {
		return c.docCallFrom(ctx, xseg.OpCheck, "", 0, true, checkReplyBuf, q, &rep)
	}, 250*time.Millisecond, poll)
	if err != nil {
		return nil, poolError("CHECK", "check", err)
	}
	if rep.Problems == nil {
		rep.Problems = []CheckProblem{}
	}
	return &rep, nil
}
