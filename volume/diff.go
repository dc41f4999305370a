package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// DiffExtent is a byte range of a volume that differs from a snapshot:
// Zero when it reads as zeros now and had data before (trimmed, or cut by
// a shrink and grown again), else data to copy from the volume.
type DiffExtent struct {
	Offset, Size uint64
	Zero         bool
}

// DiffPart is one part of a diff (DiffPart): the extents of
// [off, Next), in order, merged where adjacent and of one kind.
type DiffPart struct {
	Extents []DiffExtent
	// Next is where the next part starts: the end of the range asked
	// for (clipped to Size) once the range is done.
	Next uint64
	// Size is the size of the volume diffed, FromSize the snapshot's (0
	// for a diff from nothing).
	Size, FromSize uint64
}

// diffPageBudget bounds the map pages one DiffPart reads (both trees), so
// that a part's time is bounded whatever the volume's size and block size.
const diffPageBudget = 1024

// Diff returns the extents of [off, off+n) of volume or snapshot name
// (or NAME/ID, see Ref) that differ from snapshot from ("" = from
// nothing: every allocated range is data), in order, adjacent extents of
// one kind merged. It reads the two maps, never data, and never takes a
// lock: like MapRead, a volume this engine holds is read through its
// cache, any other from storage.
//
// The two trees are walked together, position by position (a page's
// level and index are its position, whatever the trees' heights: the
// lower tree is seen under virtual root pages whose entry 0 is it). A
// subtree whose entries name the same object in both — the same prefix
// name and epoch; prefix indices are per header, so entries are compared
// by the name they resolve to — is skipped. Below a leaf entry that
// differs, the block is data if name maps it, and zero if name has a zero
// entry where from had data; a block zero in both is no change (a trim of
// a range that was zero before changes nothing).
//
// Sizes: past from's size, name's allocated blocks are data (from counts
// as zeros there; the bytes of from's last block past its end too); the
// diff never goes past name's size (a shrink is told by the size, not by
// extents).
//
// Why "same object" never hides a change: an object is written in place
// only by the one volume that owns it (its (prefix, epoch) falls in the
// volume's spans), and a snapshot owns nothing: taking it moves the
// origin to a fresh epoch, so everything the snapshot reaches is owned by
// no volume from then on and is copied before any change (docs/maps.md,
// "Epochs and ownership"). Object names are never reused, not even after
// a crash or a remove (the epoch record only grows), so a name seen in
// from's map still holds what it held when from was taken. The exceptions
// are those of the engine's own guarantees: a data write still in flight
// into the origin when the snapshot was taken (the volume composer drains
// the volume first), and the late writes of a host fenced by a forced
// unlock into objects it owned before the break (docs/maps.md,
// "Fencing"). A diff of a live volume is of the map as it is while the
// walk reads it: diff a snapshot for a stable answer.
//
// from must be a snapshot (errs.ErrInvalid naming it otherwise) with
// name's block size (a volume of another block size shares no object
// with it).
func (e *Engine) Diff(ctx context.Context, name, from string, off, n uint64) ([]DiffExtent, error) {
	var out []DiffExtent
	vname, _ := SplitRef(name)
	err := e.diff(ctx, name, from, func(d *differ) error {
		if err := checkRange(vname, d.nh, off, n); err != nil {
			return err
		}
		d.max, d.budget = -1, -1
		if err := d.run(off, off+n); err != nil {
			return err
		}
		out = d.out
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	return out, nil
}

// DiffPart is Diff of [off, off+n) clipped to name's size, in parts: it
// stops after maxExtents extents (at most 512 if maxExtents ≤ 0) or after
// reading a bounded number of map pages, and says where the next part
// starts. The last extent of a part may continue in the next one.
func (e *Engine) DiffPart(ctx context.Context, name, from string, off, n uint64, maxExtents int) (DiffPart, error) {
	return e.diffPart(ctx, name, from, off, n, maxExtents, diffPageBudget)
}

// diffPart is DiffPart with a budget of page reads (-1: no limit).
func (e *Engine) diffPart(ctx context.Context, name, from string, off, n uint64, maxExtents, budget int) (DiffPart, error) {
	var part DiffPart
	vname, _ := SplitRef(name)
	err := e.diff(ctx, name, from, func(d *differ) error {
		part.Size = d.nh.size
		if d.fh != nil {
			part.FromSize = d.fh.size
		}
		if off > d.nh.size {
			return fmt.Errorf("volume %q: diff from %d beyond its size %d: %w", vname, off, d.nh.size, errs.ErrInvalid)
		}
		end := d.nh.size
		if n < end-off {
			end = off + n
		}
		d.max, d.budget = maxExtents, budget
		if d.max <= 0 {
			d.max = 512
		}
		if err := d.run(off, end); err != nil {
			return err
		}
		part.Extents, part.Next = d.out, d.next
		return nil
	})
	if err != nil {
		return DiffPart{}, fmt.Errorf("diff: %w", err)
	}
	return part, nil
}

// diff runs fn with a differ of name (read as MapRead reads it) against
// snapshot from (nil header for "").
func (e *Engine) diff(ctx context.Context, name, from string, fn func(d *differ) error) error {
	var fh *header
	if from != "" {
		if err := ValidName(from); err != nil {
			return err
		}
		h, err := e.readHeader(ctx, from)
		if err != nil {
			return err
		}
		if !h.snapshot() {
			return fmt.Errorf("volume %q is not a snapshot: a diff is from a snapshot: %w", from, errs.ErrInvalid)
		}
		fh = h
	}
	vname, _ := SplitRef(name)
	return e.readView(ctx, name, func(pg *pager) error {
		nh := pg.h
		if fh != nil && fh.blockSize != nh.blockSize {
			return fmt.Errorf("volume %q (blocks of %d bytes) and snapshot %q (blocks of %d) share no object: %w",
				vname, nh.blockSize, from, fh.blockSize, errs.ErrInvalid)
		}
		d := &differ{ctx: ctx, name: vname, from: from, nh: nh, npg: pg, fh: fh, bs: uint64(nh.blockSize), tail: noBlock}
		if fh != nil {
			d.fpg = &pager{e: e, h: fh, memo: make(map[pageKey]*page)}
			d.fromBlocks = fh.nblocks()
			if fh.size < nh.size && fh.size%d.bs != 0 {
				d.tail = fh.size / d.bs
			}
		}
		return fn(d)
	})
}

const noBlock = ^uint64(0)

// differ walks the maps of a volume (n) and a snapshot (f) together.
type differ struct {
	ctx        context.Context
	name, from string
	nh, fh     *header // fh nil: from nothing
	npg, fpg   *pager
	bs         uint64
	// fromBlocks: f's entries at or past this block count as zero.
	fromBlocks uint64
	// tail is the block f's size ends inside, if n is larger (the bytes
	// past f's end are compared with zeros), else noBlock.
	tail uint64
	// off, end: the byte range asked for; b0, b1 its blocks.
	off, end, b0, b1 uint64
	max              int // extents at most (-1: no limit)
	budget           int // page reads left (-1: no limit)
	out              []DiffExtent
	next             uint64
}

// node is a position in one tree: the entry naming the object there, or
// a virtual page above the tree's root (whose entry 0 is the tree).
type node struct {
	ent  entry
	virt bool
}

func (n node) absent() bool { return !n.ent.present && !n.virt }

// errPartFull ends a walk whose part is full; d.next says where it
// stopped.
var errPartFull = errors.New("diff part full")

func (d *differ) run(off, end uint64) error {
	d.off, d.end, d.next = off, end, end
	if off >= end {
		return nil
	}
	d.b0, d.b1 = off/d.bs, (end-1)/d.bs+1
	top := d.nh.height()
	if d.fh != nil {
		top = max(top, d.fh.height())
	}
	key := pageKey{top - 1, 0}
	err := d.rec(key, d.top(d.nh, top), d.top(d.fh, top))
	if err == errPartFull {
		return nil
	}
	return err
}

// top is the node of tree h at level top-1, index 0.
func (d *differ) top(h *header, top uint8) node {
	switch {
	case h == nil || !h.root.present:
		return node{}
	case h.height() == top:
		return node{ent: h.root}
	default:
		return node{virt: true}
	}
}

// same tells whether a and b (of n's and f's tree) name the same object.
func (d *differ) same(a, b node) bool {
	if a.virt || b.virt || !a.ent.present || !b.ent.present || a.ent.epoch != b.ent.epoch {
		return false
	}
	pa, pb := a.ent.prefix, b.ent.prefix
	return int(pa) < len(d.nh.prefixes) && int(pb) < len(d.fh.prefixes) && d.nh.prefixes[pa] == d.fh.prefixes[pb]
}

// children returns the 256 nodes below n, the page at key of tree h.
func (d *differ) children(h *header, pg *pager, key pageKey, n node) (*[fanout]node, error) {
	var c [fanout]node
	switch {
	case n.absent():
	case n.virt:
		if key.level == h.height() {
			c[0] = node{ent: h.root}
		} else {
			c[0] = node{virt: true}
		}
	default:
		p, err := pg.get(d.ctx, key, n.ent.ref)
		if err != nil {
			return nil, err
		}
		delete(pg.memo, key) // each page is visited once: keep memory flat
		for i, e := range p.e {
			c[i] = node{ent: e}
		}
	}
	return &c, nil
}

// rec compares the subtrees at key: a in n's tree, b in f's.
func (d *differ) rec(key pageKey, a, b node) error {
	base := key.index << (fanoutBits * uint(key.level+1))
	width := uint64(1) << (fanoutBits * uint(key.level)) // blocks per entry
	loads := 0
	if !a.absent() && !a.virt {
		loads++
	}
	if !b.absent() && !b.virt {
		loads++
	}
	if d.budget >= 0 {
		// A part ends before a subtree once the budget is spent, but not
		// before the first one past off: every part makes progress.
		if d.budget < loads && base*d.bs > d.off {
			d.next = base * d.bs
			return errPartFull
		}
		d.budget = max(d.budget-loads, 0)
	}
	ca, err := d.children(d.nh, d.npg, key, a)
	if err != nil {
		return fmt.Errorf("volume %q: %w", d.name, err)
	}
	var cb *[fanout]node
	if d.fh != nil {
		if cb, err = d.children(d.fh, d.fpg, key, b); err != nil {
			return fmt.Errorf("snapshot %q: %w", d.from, err)
		}
	} else {
		cb = new([fanout]node)
	}
	for i := range fanout {
		lo := base + uint64(i)*width
		if lo >= d.b1 {
			break
		}
		if lo+width <= d.b0 {
			continue
		}
		na, nb := ca[i], cb[i]
		if lo >= d.fromBlocks {
			nb = node{}
		}
		if na.absent() && nb.absent() {
			continue
		}
		if d.same(na, nb) && !(lo <= d.tail && d.tail < lo+width) {
			continue
		}
		if key.level == 0 {
			err = d.block(lo, na, nb)
		} else {
			err = d.rec(pageKey{key.level - 1, lo >> (fanoutBits * uint(key.level))}, na, nb)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// block reports block b, whose entries a (n's) and b (f's) differ (or b
// is the tail block).
func (d *differ) block(blk uint64, a, b node) error {
	lo, hi := blk*d.bs, min((blk+1)*d.bs, d.nh.size)
	if blk == d.tail {
		fend := d.fh.size
		if !d.same(a, b) {
			if err := d.emit(lo, fend, a, b); err != nil {
				return err
			}
		}
		return d.emit(fend, hi, a, node{})
	}
	return d.emit(lo, hi, a, b)
}

// emit reports [lo, hi) (clipped to the range asked for) as data if a
// maps it, as zero if only b did.
func (d *differ) emit(lo, hi uint64, a, b node) error {
	lo, hi = max(lo, d.off), min(hi, d.end)
	if lo >= hi || (!a.ent.present && !b.ent.present) {
		return nil
	}
	zero := !a.ent.present
	if k := len(d.out) - 1; k >= 0 && d.out[k].Offset+d.out[k].Size == lo && d.out[k].Zero == zero {
		d.out[k].Size += hi - lo
		return nil
	}
	if d.max >= 0 && len(d.out) >= d.max {
		d.next = lo
		return errPartFull
	}
	d.out = append(d.out, DiffExtent{Offset: lo, Size: hi - lo, Zero: zero})
	return nil
}
