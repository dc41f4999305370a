package volclient

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// DiffExtent is a range of a volume that differs from a snapshot: Zero
// when it reads as zeros now and had data in the snapshot (trimmed, or
// cut by a shrink), else data to copy from the volume. Its JSON form is
// one extent of what `vlmc diff --json` prints.
type DiffExtent struct {
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"length"`
	Zero   bool   `json:"zero"`
}

// DiffReport is a diff with its context and totals: what `vlmc diff
// --json` prints.
type DiffReport struct {
	// Name is the volume or snapshot diffed, From the snapshot it is
	// compared with ("" for none: every allocated range is data).
	Name string `json:"name"`
	From string `json:"from"`
	// Size is Name's size; FromSize From's (0 for none).
	Size     uint64 `json:"size"`
	FromSize uint64 `json:"from_size"`
	// Extents in order, adjacent extents of one kind merged.
	Extents []DiffExtent `json:"extents"`
	// DataBytes and ZeroBytes total the data and zero extents.
	DataBytes uint64 `json:"data_bytes"`
	ZeroBytes uint64 `json:"zero_bytes"`
}

// diffRequest and diffReply are DIFF's documents (mapper/diff.go).
type diffRequest struct {
	From   string `json:"from"`
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	Max    int    `json:"max"`
}

type diffReply struct {
	Extents  []DiffExtent `json:"extents"`
	Next     uint64       `json:"next"`
	Size     uint64       `json:"size"`
	FromSize uint64       `json:"from_size"`
}

// diffPartMax is the most extents asked for per reply (0: the mapper's
// bound). Tests make it small to see many parts.
var diffPartMax = 0

// Diff returns the extents of volume or snapshot name that differ from
// snapshot from ("": from nothing, every allocated range), in order,
// adjacent extents of one kind merged, as DiffEach finds them.
func (c *Client) Diff(ctx context.Context, name, from string) ([]DiffExtent, error) {
	rep, err := c.DiffReport(ctx, name, from)
	return rep.Extents, err
}

// DiffReport is Diff with sizes and totals.
func (c *Client) DiffReport(ctx context.Context, name, from string) (DiffReport, error) {
	rep := DiffReport{Name: name, From: from, Extents: []DiffExtent{}}
	size, fromSize, err := c.DiffEach(ctx, name, from, func(x DiffExtent) error {
		rep.Extents = append(rep.Extents, x)
		if x.Zero {
			rep.ZeroBytes += x.Size
		} else {
			rep.DataBytes += x.Size
		}
		return nil
	})
	rep.Size, rep.FromSize = size, fromSize
	return rep, err
}

// DiffEach calls fn for every extent of volume or snapshot name that
// differs from snapshot from ("": from nothing), in order, adjacent
// extents merged, asking the mapper part by part (each reply is bounded,
// whatever the volume's size), and returns name's and from's sizes. The
// mapper reads the maps, never data, and takes no lock: diff a snapshot
// for an answer that cannot change under it. from must be a snapshot
// (errs.ErrInvalid naming it otherwise; errs.ErrNotFound if it does not
// exist); a volume resized while the diff runs fails with errs.ErrBusy.
func (c *Client) DiffEach(ctx context.Context, name, from string, fn func(DiffExtent) error) (size, fromSize uint64, err error) {
	var last *DiffExtent
	for off, first := uint64(0), true; first || off < size; first = false {
		var rep diffReply
		q := diffRequest{From: from, Offset: off, Max: diffPartMax}
		if err := c.docCall(ctx, xseg.OpDiff, name, 0, true, q, &rep); err != nil {
			return 0, 0, err
		}
		switch {
		case first:
			size, fromSize = rep.Size, rep.FromSize
		case rep.Size != size || rep.FromSize != fromSize:
			return 0, 0, fmt.Errorf("volume %q: resized during the diff (%d bytes, then %d; snapshot %q %d, then %d): %w",
				name, size, rep.Size, from, fromSize, rep.FromSize, errs.ErrBusy)
		}
		if rep.Next > size || (rep.Next <= off && off < size) {
			return 0, 0, fmt.Errorf("volume %q: diff part at %d says the next starts at %d (size %d): %w", name, off, rep.Next, size, errs.ErrIO)
		}
		for _, x := range rep.Extents {
			if x.Offset < off || x.Offset+x.Size > rep.Next || x.Size == 0 || (last != nil && x.Offset < last.Offset+last.Size) {
				return 0, 0, fmt.Errorf("volume %q: diff part [%d, %d) has extent %+v: %w", name, off, rep.Next, x, errs.ErrIO)
			}
			if last != nil && last.Offset+last.Size == x.Offset && last.Zero == x.Zero {
				last.Size += x.Size
				continue
			}
			if last != nil {
				if err := fn(*last); err != nil {
					return 0, 0, err
				}
			}
			last = &x
		}
		off = rep.Next
	}
	if last != nil {
		if err := fn(*last); err != nil {
			return 0, 0, err
		}
	}
	return size, fromSize, nil
}
