package volclient

import (
	"context"
	"fmt"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// Snapshot tree operations: flatten, rollback, and the tree of snapshots
// and clones (docs/maps.md, "Flatten and rollback").

// FlattenOptions shape a Flatten.
type FlattenOptions struct {
	// Step is the bytes of the volume each request covers (rounded to
	// whole blocks; default 256 blocks). Zero blocks cost nothing.
	Step uint64
	// Progress, if set, is called after each range with the bytes of the
	// volume gone through so far and the volume's size.
	Progress func(done, total uint64)
	// RequestTimeout, if set, bounds each request (a range waits for the
	// volume's lock as a write does, for as long as another host holds
	// it); the whole flatten is bound only by ctx.
	RequestTimeout time.Duration
}

// FlattenResult is what a Flatten did. Its JSON form is what `vlmc
// flatten --json` prints.
type FlattenResult struct {
	Name string `json:"name"`
	// Parent is the snapshot the volume no longer needs ("" if it had
	// none: then it shared blocks with its own snapshots only).
	Parent string `json:"parent"`
	// Size of the volume, in bytes.
	Size uint64 `json:"size"`
	// Copied: bytes of blocks copied to the volume's own objects.
	Copied uint64 `json:"copied"`
}

type flattenRequest struct {
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	Done   bool   `json:"done"`
}

type flattenReply struct {
	Copied uint64 `json:"copied"`
}

// Flatten makes volume name independent of its parent snapshot: every
// block it shares is copied to objects of its own, a range per request
// while its I/O goes on, then its parent is cleared. Afterwards removing
// the parent snapshot (and collecting garbage, GC) frees the parent's
// space. A volume without parent shares blocks only with its own
// snapshots: flattening it makes its blocks its own (the snapshots keep
// theirs). A snapshot is refused with errs.ErrInvalid. Interrupted, it
// may be run again: what was copied stays copied.
func (c *Client) Flatten(ctx context.Context, name string, o FlattenOptions) (FlattenResult, error) {
	in, err := c.Info(ctx, name)
	if err != nil {
		return FlattenResult{}, err
	}
	if in.Snapshot {
		return FlattenResult{}, fmt.Errorf("volume %q is a snapshot: only a volume can be flattened: %w", name, errs.ErrInvalid)
	}
	res := FlattenResult{Name: name, Parent: in.Parent, Size: in.Size}
	bs := uint64(max(in.BlockSize, 1))
	step := o.Step
	if step == 0 {
		step = 256 * bs
	}
	step = max(step/bs, 1) * bs
	call := func(q flattenRequest, rep *flattenReply) error {
		cctx, cancel := reqCtx(ctx, o.RequestTimeout)
		defer cancel()
		return c.docCall(cctx, xseg.OpFlatten, name, 0, false, q, rep)
	}
	for off := uint64(0); off < in.Size; off += step {
		n := min(step, in.Size-off)
		var rep flattenReply
		if err := call(flattenRequest{Offset: off, Length: n}, &rep); err != nil {
			return res, err
		}
		res.Copied += rep.Copied
		if o.Progress != nil {
			o.Progress(off+n, in.Size)
		}
	}
	if err := call(flattenRequest{Done: true}, new(flattenReply)); err != nil {
		return res, err
	}
	return res, nil
}

type rollbackRequest struct {
	Snapshot string `json:"snapshot"`
}

// Rollback makes volume name's content snapshot snap's (and its size).
// It is refused with errs.ErrBusy while the volume is in use on this host
// (mapped, NBD clients, vlmc open or lock), with errs.ErrLocked while
// another host holds its lock, and with errs.ErrInvalid if snap is not of
// the volume's history (its own snapshots, its parent snapshot and those
// taken before that). Connections other hosts opened before fail from
// then on, as after a remove and create.
func (c *Client) Rollback(ctx context.Context, name, snap string) error {
	if snap == "" {
		return fmt.Errorf("volume %q: rollback to no snapshot: %w", name, errs.ErrInvalid)
	}
	return c.docCall(ctx, xseg.OpRollback, name, 0, false, rollbackRequest{Snapshot: snap}, nil)
}

// TreeNode is a volume or snapshot with its links. Its JSON form is what
// `vlmc list --tree --json` prints.
type TreeNode struct {
	Name     string `json:"name"`
	Snapshot bool   `json:"snapshot"`
	Size     uint64 `json:"size"`
	// Parent: of a clone, the snapshot it came from.
	Parent string `json:"parent,omitempty"`
	// Origin: of a snapshot, the volume it was taken of (its name now).
	Origin string `json:"origin,omitempty"`
	// Gone: Parent or Origin is the name the header recorded, and no such
	// volume is there any more (removed, or renamed away).
	Gone bool `json:"gone,omitempty"`
	// Children: a volume's snapshots, a snapshot's clones.
	Children []string `json:"children"`
	// Err: the header could not be read.
	Err string `json:"error,omitempty"`
}

// Up is the node above n in the tree: a clone's parent, a snapshot's
// origin; "" for a root (also when that is gone).
func (n TreeNode) Up() string {
	switch {
	case n.Gone:
		return ""
	case n.Snapshot:
		return n.Origin
	}
	return n.Parent
}

// Tree returns every volume and snapshot with its links, by name.
func (c *Client) Tree(ctx context.Context) ([]TreeNode, error) {
	var nodes []TreeNode
	if err := c.docCall(ctx, xseg.OpTree, "", 0, true, nil, &nodes); err != nil {
		return nil, err
	}
	return nodes, nil
}

// Children returns the snapshots of volume name, or the clones of
// snapshot name, by name; errs.ErrNotFound if there is no such volume.
func (c *Client) Children(ctx context.Context, name string) ([]string, error) {
	nodes, err := c.Tree(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.Name == name {
			return n.Children, nil
		}
	}
	return nil, fmt.Errorf("volume %q: %w", name, errs.ErrNotFound)
}
