package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/archipelago-go/archipelago/errs"
)

// Lineage: which snapshot a clone came from and which volume a snapshot
// was taken of, for `vlmc list --tree`, `vlmc children` and rollback's
// check that a snapshot belongs to a volume's history.
//
// Headers have always recorded it in their parent field: a clone names
// its snapshot, a snapshot the volume it was taken of. Those are names at
// the time, and renames change no other header, so the recorded name is
// checked against what the maps tell, and a snapshot whose origin was
// renamed is found by its epochs (takenOf), with no format change:
//
//   - a snapshot keeps the spans its origin had when it was taken, and the
//     origin moves at once to a fresh span of its own name with a higher
//     epoch (and only grows its prefix table, by appending: a clone starts
//     from its parent's table, a snapshot copies its origin's);
//   - so snapshot S was taken of header X (a later state of the volume: the
//     volume itself, renamed or not, or a later snapshot of it) if S's
//     prefix table starts X's and X has a span of S's allocation prefix
//     that starts above S's allocation epoch. Among volumes that match, the
//     origin is the one whose such span starts lowest: the epochs of a name
//     only grow, and a volume created later under the origin's old name
//     gets higher ones.
//
// Limits (nothing in the header tells them apart): a volume removed and
// created again under the same name, while its predecessor's snapshots
// live on, is shown as their origin; a volume renamed more than 8 times
// since the snapshot (its oldest spans dropped) or fenced after a rename
// is found by the recorded name only; a clone whose snapshot was renamed
// or removed shows as a root, with the recorded name marked gone.

// Node is one volume or snapshot in the tree of snapshots and clones.
type Node struct {
	Name     string
	Snapshot bool
	Size     uint64
	// Parent: for a clone, the snapshot it was cloned from (or rolled back
	// to, from a snapshot of another volume); "" for a volume that was
	// created, or flattened.
	Parent string
	// Origin: for a snapshot, the volume it was taken of (by its name now,
	// if it was renamed since).
	Origin string
	// Gone: Parent or Origin is the name the header recorded, but no such
	// volume is there any more (removed, or renamed and not found).
	Gone bool
	// Children: a volume's snapshots, a snapshot's clones, by name.
	Children []string
	// Err: the header could not be read (the node has no links).
	Err string
}

// Up returns the node above n in the tree ("" for a root): its parent
// snapshot, or its origin volume.
func (n *Node) Up() string {
	if n.Gone {
		return ""
	}
	if n.Snapshot {
		return n.Origin
	}
	return n.Parent
}

// lineage is the tree with the headers it was made from.
type lineage struct {
	nodes map[string]*Node
	hdrs  map[string]*header
	names []string // sorted
}

// Tree returns every volume and snapshot with its links, in name order.
func (e *Engine) Tree(ctx context.Context) ([]Node, error) {
	l, err := e.lineage(ctx)
	if err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	out := make([]Node, 0, len(l.names))
	for _, n := range l.names {
		out = append(out, *l.nodes[n])
	}
	return out, nil
}

// Children returns the names of the snapshots of volume name, or of the
// clones of snapshot name, sorted.
func (e *Engine) Children(ctx context.Context, name string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("children: %w", err)
	}
	l, err := e.lineage(ctx)
	if err != nil {
		return nil, fmt.Errorf("children: %w", err)
	}
	n := l.nodes[name]
	if n == nil {
		return nil, fmt.Errorf("children: %w", notFound(name))
	}
	if n.Err != "" {
		return nil, fmt.Errorf("children: volume %q: %s", name, n.Err)
	}
	return n.Children, nil
}

// takenOf tells whether snapshot s was taken of the volume whose header
// (or a later snapshot's) is x, and if so the start of x's span of s's
// allocation prefix (the lower, the closer to s).
func takenOf(s, x *header) (from uint64, ok bool) {
	if !s.snapshot() || s == x || s.blockSize != x.blockSize || !isPrefixTable(s.prefixes, x.prefixes) {
		return 0, false
	}
	a := s.alloc()
	for _, sp := range x.spans {
		if sp.prefix == a.prefix && sp.from > a.epoch && (!ok || sp.from < from) {
			from, ok = sp.from, true
		}
	}
	return from, ok
}

// isPrefixTable tells whether table a starts table b.
func isPrefixTable(a, b []string) bool {
	return len(a) <= len(b) && slices.Equal(a, b[:len(a)])
}

// cloneOf tells whether clone c may have come from snapshot s: c's prefix
// table starts with s's (a clone copies its parent's and appends).
func cloneOf(c, s *header) bool {
	return s.snapshot() && !c.snapshot() && s.blockSize == c.blockSize && isPrefixTable(s.prefixes, c.prefixes)
}

// lineage reads every header and links the nodes.
func (e *Engine) lineage(ctx context.Context) (*lineage, error) {
	l := &lineage{nodes: map[string]*Node{}, hdrs: map[string]*header{}}
	err := e.List(ctx, func(name string) error {
		h, err := e.readHeader(ctx, name)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			return nil // removed meanwhile
		case err != nil:
			l.nodes[name] = &Node{Name: name, Err: err.Error()}
		default:
			l.hdrs[name] = h
			l.nodes[name] = &Node{Name: name, Snapshot: h.snapshot(), Size: h.size}
		}
		l.names = append(l.names, name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(l.names)
	// Clones: the recorded snapshot, if its table is a start of theirs.
	for _, name := range l.names {
		h, n := l.hdrs[name], l.nodes[name]
		if h == nil || h.snapshot() || h.parent == "" {
			continue
		}
		n.Parent = h.parent
		if p := l.hdrs[h.parent]; p == nil || !cloneOf(h, p) {
			n.Gone = true
		}
	}
	// Snapshots: the volume that matches by epochs, closest first; else
	// the recorded name if it is a volume whose table goes on from theirs.
	for _, name := range l.names {
		h, n := l.hdrs[name], l.nodes[name]
		if h == nil || !h.snapshot() {
			continue
		}
		best, bestFrom := "", uint64(0)
		for _, x := range l.names {
			xh := l.hdrs[x]
			if xh == nil || xh.snapshot() {
				continue
			}
			if from, ok := takenOf(h, xh); ok && (best == "" || from < bestFrom) && !l.below(x, name) {
				best, bestFrom = x, from
			}
		}
		if best == "" {
			if xh := l.hdrs[h.parent]; xh != nil && !xh.snapshot() && isPrefixTable(h.prefixes, xh.prefixes) && !l.below(h.parent, name) {
				best = h.parent
			}
		}
		switch {
		case best != "":
			n.Origin = best
		case h.parent != "":
			n.Origin, n.Gone = h.parent, true
		}
	}
	// Whatever matched, no node may end up below itself.
	for _, name := range l.names {
		if n := l.nodes[name]; n.Snapshot && n.Origin != "" && !n.Gone && l.below(n.Origin, name) {
			n.Gone = true
		}
	}
	for _, name := range l.names {
		if up := l.nodes[name].Up(); up != "" {
			p := l.nodes[up]
			p.Children = append(p.Children, name)
		}
	}
	return l, nil
}

// below tells whether node x lies below node top (following the links
// made so far), so that linking top under x would make a cycle (a clone
// named as its snapshot's removed origin matches that origin's epochs).
func (l *lineage) below(x, top string) bool {
	for i := 0; x != "" && i <= len(l.names); i++ {
		if x == top {
			return true
		}
		x = l.nodes[x].Up()
	}
	return false
}

// inHistory tells whether snapshot snap (header sh) belongs to the
// history of volume name: it was taken of name (renamed or not), or it is
// name's parent snapshot or was taken before it of the same volume, and
// so on up the chain of clones. The reason it is not, if not.
func (l *lineage) inHistory(name, snap string) bool {
	sh := l.hdrs[snap]
	cur := name
	for i := 0; cur != "" && i <= len(l.names); i++ {
		ch := l.hdrs[cur]
		if ch == nil {
			return false
		}
		if _, ok := takenOf(sh, ch); ok && !l.below(cur, snap) {
			return true
		}
		n := l.nodes[cur]
		if !ch.snapshot() {
			// A clone: on to its parent snapshot.
			if n.Gone || n.Parent == "" {
				return false
			}
			if n.Parent == snap {
				return true
			}
			cur = n.Parent
			continue
		}
		// A snapshot on the chain: the snapshots taken of its origin
		// before it were checked (takenOf); on to the origin's parent.
		if n.Gone || n.Origin == "" {
			return false
		}
		on := l.nodes[n.Origin]
		if on.Gone || on.Parent == "" {
			return false
		}
		if on.Parent == snap {
			return true
		}
		cur = on.Parent
	}
	return false
}
