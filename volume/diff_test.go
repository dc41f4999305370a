package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// The diff tests compare Engine.Diff with two oracles:
//
//   - bytes: applying the extents onto the snapshot's content (cut or
//     grown to the volume's size) gives the volume's content;
//   - the maps: the model (mvol) shares a block between a volume and its
//     snapshots until one of them writes, trims or cuts it, as the engine
//     shares objects; so the extents are exactly the blocks whose model
//     block differs (data if the volume has it, zero if only the snapshot
//     did), plus the volume's blocks past the snapshot's size (data).
//     This is what "from the maps alone" means: a block rewritten with
//     the same bytes is a change, a trim of a zero range is not.

// diffOracle is the diff the model predicts for name (m) against from
// (f; nil: from nothing), over the whole of name.
func diffOracle(m, f *mvol) []DiffExtent {
	if f == nil {
		f = &mvol{}
	}
	var out []DiffExtent
	add := func(lo, hi uint64, zero bool) {
		if lo >= hi {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].Offset+out[k].Size == lo && out[k].Zero == zero {
			out[k].Size += hi - lo
			return
		}
		out = append(out, DiffExtent{Offset: lo, Size: hi - lo, Zero: zero})
	}
	same := func(a, b []byte) bool {
		return (a == nil) == (b == nil) && (a == nil || &a[0] == &b[0])
	}
	nb := (m.size + modelBS - 1) / modelBS
	for b := range nb {
		lo, hi := b*modelBS, min((b+1)*modelBS, m.size)
		mid := min(max(lo, f.size), hi) // the bytes from mid on are past f's end
		mb, fb := m.blocks[b], f.blocks[b]
		if lo < mid && !same(mb, fb) {
			add(lo, mid, mb == nil)
		}
		if mid < hi && mb != nil {
			add(mid, hi, false)
		}
	}
	return out
}

// diffEnv is an engine with the model of its volumes.
type diffEnv struct {
	t    *testing.T
	ctx  context.Context
	env  *env
	vols map[string]*mvol
	rng  *rand.Rand
	seq  int
	log  []string
	// content caches read's answers until the next operation.
	content map[string][]byte
	// parts: check also the diff in parts (DiffPart).
	parts bool
}

func newDiffEnv(t *testing.T, seed uint64) *diffEnv {
	return &diffEnv{t: t, ctx: context.Background(), env: newEnv(t, modelBS), vols: map[string]*mvol{},
		rng: rand.New(rand.NewPCG(seed, 7)), parts: true}
}

func (d *diffEnv) fatalf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("%s\nafter:\n  %s", fmt.Sprintf(format, args...), strings.Join(d.log, "\n  "))
}

func (d *diffEnv) do(op string, err error) {
	d.t.Helper()
	d.log = append(d.log, op)
	clear(d.content)
	if err != nil {
		d.fatalf("%s: %v", op, err)
	}
}

func (d *diffEnv) create(name string, size uint64) {
	d.do(fmt.Sprintf("create %s %d", name, size), d.env.e.Create(d.ctx, name, size))
	d.vols[name] = &mvol{size: size, blocks: map[uint64][]byte{}}
}

func (d *diffEnv) write(name string, off uint64, p []byte) {
	d.do(fmt.Sprintf("write %s %d+%d", name, off, len(p)), writeVol(d.ctx, d.env.e, d.env.dataStore(), name, off, p))
	d.vols[name].write(off, p)
}

func (d *diffEnv) fill(name string, off, n uint64, c byte) {
	d.write(name, off, bytes.Repeat([]byte{c}, int(n)))
}

// trim trims [off, off+n) as the engine does: whole blocks only (the
// last block counts as whole when the range reaches the end).
func (d *diffEnv) trim(name string, off, n uint64) {
	v := d.vols[name]
	d.do(fmt.Sprintf("trim %s %d+%d", name, off, n), d.env.e.Trim(d.ctx, name, off, n))
	b0, b1 := (off+modelBS-1)/modelBS, (off+n)/modelBS
	if off+n == v.size {
		b1 = (v.size + modelBS - 1) / modelBS
	}
	v.trim(b0, b1)
}

func (d *diffEnv) snapshot(name, snap string) {
	d.do(fmt.Sprintf("snapshot %s %s", name, snap), d.env.e.Snapshot(d.ctx, name, snap))
	s := d.vols[name].clone()
	s.snap = true
	d.vols[snap] = s
}

func (d *diffEnv) clone(parent, name string, size uint64) {
	d.do(fmt.Sprintf("clone %s %s %d", parent, name, size), d.env.e.Clone(d.ctx, parent, name, size))
	c := d.vols[parent].clone()
	c.snap, c.size = false, size
	d.vols[name] = c
}

func (d *diffEnv) resize(name string, size uint64) {
	d.do(fmt.Sprintf("resize %s %d", name, size), d.env.e.Resize(d.ctx, name, size, true))
	d.vols[name].resize(size)
}

// readAt reads [off, off+n) of name, through a cache that the next
// operation clears (a small volume is read whole, once).
func (d *diffEnv) readAt(name string, off, n uint64) []byte {
	d.t.Helper()
	key, roff, rn := fmt.Sprintf("%s@%d+%d", name, off, n), off, n
	if size := d.vols[name].size; size <= 4<<20 {
		key, roff, rn = name, 0, size
	}
	b, ok := d.content[key]
	if !ok {
		var err error
		if b, err = readVol(d.ctx, d.env.e, d.env.dataStore(), name, roff, rn); err != nil {
			d.fatalf("read %s at %d+%d: %v", name, roff, rn, err)
		}
		if d.content == nil {
			d.content = map[string][]byte{}
		}
		d.content[key] = b
	}
	return b[off-roff:][:n]
}

// check diffs name against from ("": from nothing) and compares the
// result with both oracles; it returns the extents.
func (d *diffEnv) check(name, from string) []DiffExtent {
	d.t.Helper()
	v := d.vols[name]
	got, err := d.env.e.Diff(d.ctx, name, from, 0, v.size)
	if err != nil {
		d.fatalf("diff %s from %q: %v", name, from, err)
	}
	want := diffOracle(v, d.vols[from])
	if !slices.Equal(got, want) {
		d.fatalf("diff %s from %q:\n got %v\nwant %v", name, from, got, want)
	}
	// Bytes: from's content, cut or grown to name's size, with the
	// extents applied, is name's content. Compared block by block: every
	// block of a small volume, else the blocks either model has or an
	// extent covers (the others read as zeros on both sides by the model,
	// which TestModel holds to the engine).
	var blocks []uint64
	nb := (v.size + modelBS - 1) / modelBS
	if v.size <= 4<<20 {
		for b := range nb {
			blocks = append(blocks, b)
		}
	} else {
		set := map[uint64]bool{}
		for b := range v.blocks {
			set[b] = true
		}
		if f := d.vols[from]; f != nil {
			for b := range f.blocks {
				set[b] = b < nb
			}
		}
		for _, x := range got {
			for b := x.Offset / modelBS; b*modelBS < x.Offset+x.Size; b++ {
				set[b] = true
			}
		}
		blocks = slices.Sorted(maps.Keys(set))
	}
	for _, b := range blocks {
		lo, hi := b*modelBS, min((b+1)*modelBS, v.size)
		now := d.readAt(name, lo, hi-lo)
		img := make([]byte, hi-lo)
		if f := d.vols[from]; f != nil && lo < f.size {
			copy(img, d.readAt(from, lo, min(hi, f.size)-lo))
		}
		for _, x := range got {
			xlo, xhi := max(x.Offset, lo), min(x.Offset+x.Size, hi)
			if xlo >= xhi {
				continue
			}
			if x.Zero {
				clear(img[xlo-lo : xhi-lo])
			} else {
				copy(img[xlo-lo:xhi-lo], now[xlo-lo:xhi-lo])
			}
		}
		if !bytes.Equal(img, now) {
			d.fatalf("diff %s from %q: %v applied to %s gives in block %d\n %s\nnot\n %s", name, from, got, from, b, runs(img), runs(now))
		}
	}
	// In parts (as the mapper serves it), from a few extents to one per
	// part and a page budget that runs out: the same extents.
	if !d.parts {
		return got
	}
	for _, lim := range []struct{ max, budget int }{{1, -1}, {2, 3}, {3, 2}, {0, diffPageBudget}} {
		var parts []DiffExtent
		for off, n := uint64(0), 0; off < v.size; n++ {
			p, err := d.env.e.diffPart(d.ctx, name, from, off, v.size-off, lim.max, lim.budget)
			if err != nil {
				d.fatalf("diff part %s from %q at %d: %v", name, from, off, err)
			}
			if p.Next <= off || p.Size != v.size || n > 100000 {
				d.fatalf("diff part %s from %q at %d: next %d of %d", name, from, off, p.Next, p.Size)
			}
			for _, x := range p.Extents {
				if x.Offset < off || x.Offset+x.Size > p.Next {
					d.fatalf("diff part at %d (next %d): extent %+v outside", off, p.Next, x)
				}
				if k := len(parts) - 1; k >= 0 && parts[k].Offset+parts[k].Size == x.Offset && parts[k].Zero == x.Zero {
					parts[k].Size += x.Size
				} else {
					parts = append(parts, x)
				}
			}
			off = p.Next
		}
		if !slices.Equal(parts, got) {
			d.fatalf("diff %s from %q in parts of %+v:\n got %v\nwant %v", name, from, lim, parts, got)
		}
	}
	return got
}

func TestDiffWritesTrimsAndSnapshots(t *testing.T) {
	const bs = modelBS
	d := newDiffEnv(t, 1)
	d.create("v", 64*bs)
	d.fill("v", 0, 4*bs, 'a')
	d.fill("v", 20*bs+100, 10, 'b') // one partial block
	d.snapshot("v", "s1")

	// From nothing: the allocated blocks, as data.
	if got, want := d.check("s1", ""), []DiffExtent{{0, 4 * bs, false}, {20 * bs, bs, false}}; !slices.Equal(got, want) {
		t.Fatalf("s1 from nothing: %v, want %v", got, want)
	}
	// Nothing changed: empty, for the volume and for the snapshot itself.
	if got := d.check("v", "s1"); len(got) != 0 {
		t.Fatalf("v from s1 before any write: %v", got)
	}
	if got := d.check("s1", "s1"); len(got) != 0 {
		t.Fatalf("s1 from s1: %v", got)
	}

	// A trim of a range that was zero is no change; nor is a block
	// written and trimmed again since the snapshot.
	d.trim("v", 30*bs, 10*bs)
	d.fill("v", 50*bs, bs, 'c')
	d.trim("v", 50*bs, bs)
	if got := d.check("v", "s1"); len(got) != 0 {
		t.Fatalf("v from s1 after trims of zero ranges: %v", got)
	}

	// A write is data (the whole block: the map knows blocks), a trim of
	// data is zero, and a rewrite with the same bytes is a change too.
	d.fill("v", 2*bs+10, 5, 'x')
	d.trim("v", 3*bs, bs)
	d.fill("v", 20*bs+100, 10, 'b')
	want := []DiffExtent{{2 * bs, bs, false}, {3 * bs, bs, true}, {20 * bs, bs, false}}
	if got := d.check("v", "s1"); !slices.Equal(got, want) {
		t.Fatalf("v from s1: %v, want %v", got, want)
	}

	// A chain: s2 then s3; each diff is against its own base.
	d.snapshot("v", "s2")
	d.fill("v", 40*bs, 2*bs, 'd')
	d.snapshot("v", "s3")
	d.trim("v", 0, bs)
	for _, p := range [][2]string{{"s2", "s1"}, {"s3", "s2"}, {"s3", "s1"}, {"v", "s3"}, {"v", "s2"}, {"v", "s1"}, {"s1", "s3"}, {"v", ""}} {
		d.check(p[0], p[1])
	}
	if got, want := d.check("s3", "s2"), []DiffExtent{{40 * bs, 2 * bs, false}}; !slices.Equal(got, want) {
		t.Fatalf("s3 from s2: %v, want %v", got, want)
	}
	// Backwards (an older snapshot from a newer one): the blocks written
	// since are zero or the older data.
	if got, want := d.check("s2", "s3"), []DiffExtent{{40 * bs, 2 * bs, true}}; !slices.Equal(got, want) {
		t.Fatalf("s2 from s3: %v, want %v", got, want)
	}
	// A range of the volume only.
	got, err := d.env.e.Diff(d.ctx, "v", "s1", 2*bs+5, 2*bs)
	if want := []DiffExtent{{2*bs + 5, bs - 5, false}, {3 * bs, bs, true}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("v from s1 in a range: %v %v, want %v", got, err, want)
	}
}

func TestDiffCloneAndParent(t *testing.T) {
	const bs = modelBS
	d := newDiffEnv(t, 2)
	d.create("base", 100*bs)
	d.fill("base", 0, 3*bs, 'a')
	d.fill("base", 99*bs, bs, 'z')
	d.snapshot("base", "gold")
	// A clone shares everything with its parent: no change, also when it
	// is larger (its tree is higher: the parent's root is its page's
	// entry 0) — only its own blocks past the parent's size count.
	d.clone("gold", "c1", 100*bs)
	d.clone("gold", "c2", 70000*bs) // height 3 against the parent's 1
	for _, c := range []string{"c1", "c2"} {
		if got := d.check(c, "gold"); len(got) != 0 {
			t.Fatalf("%s from gold before any write: %v", c, got)
		}
	}
	d.fill("c2", bs, 10, 'b')
	d.fill("c2", 69999*bs, 5, 'y')
	d.trim("c2", 99*bs, bs)
	want := []DiffExtent{{bs, bs, false}, {99 * bs, bs, true}, {69999 * bs, bs, false}}
	if got := d.check("c2", "gold"); !slices.Equal(got, want) {
		t.Fatalf("c2 from gold: %v, want %v", got, want)
	}
	// The other way round: the parent against a snapshot of its clone.
	d.snapshot("c2", "c2s")
	d.check("gold", "c2s")
	d.check("c1", "c2s")
	// A snapshot of another lineage: every allocated block differs.
	d.create("other", 100*bs)
	d.fill("other", 0, bs, 'a')
	d.snapshot("other", "os")
	d.check("c1", "os")
	d.check("os", "gold")
}

func TestDiffResize(t *testing.T) {
	const bs = modelBS
	d := newDiffEnv(t, 3)
	d.create("v", 10*bs+100) // a partial last block
	d.fill("v", 0, 10*bs+100, 'a')
	d.snapshot("v", "s1")
	// Grown: the bytes past s1's end are data where allocated (its last
	// block's tail too: the same object, past s1's end).
	d.resize("v", 300*bs) // height 2 against s1's 1
	d.fill("v", 299*bs, 10, 'b')
	if got, want := d.check("v", "s1"), []DiffExtent{{10*bs + 100, bs - 100, false}, {299 * bs, bs, false}}; !slices.Equal(got, want) {
		t.Fatalf("v grown from s1: %v, want %v", got, want)
	}
	// Shrunk: nothing past the new size; the cut last block is data.
	d.resize("v", 5*bs+7)
	if got, want := d.check("v", "s1"), []DiffExtent{{5 * bs, 7, false}}; !slices.Equal(got, want) {
		t.Fatalf("v shrunk from s1: %v, want %v", got, want)
	}
	// Shrunk and grown again: what was cut reads as zeros, a change.
	d.resize("v", 12*bs)
	d.check("v", "s1")
	d.snapshot("v", "s2")
	d.check("s1", "s2")
	d.check("s2", "s1")
}

// TestDiffRandom runs random writes, trims, snapshots, clones and resizes
// and checks the diff of every volume and snapshot against every
// snapshot (and from nothing) with both oracles.
func TestDiffRandom(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			d := newDiffEnv(t, seed)
			d.create("v0", uint64(d.rng.IntN(400)+1)*modelBS/2+uint64(d.rng.IntN(modelBS)))
			for step := range 60 {
				d.randomStep()
				if step%15 == 14 {
					d.checkAll()
				}
			}
			d.checkAll()
		})
	}
}

func (d *diffEnv) names(snap bool) []string {
	var out []string
	for n, v := range d.vols {
		if v.snap == snap {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (d *diffEnv) randomStep() {
	vols, snaps := d.names(false), d.names(true)
	name := vols[d.rng.IntN(len(vols))]
	v := d.vols[name]
	pos := func() uint64 { return d.rng.Uint64N(v.size) }
	switch r := d.rng.IntN(100); {
	case r < 45:
		off := pos()
		n := min(v.size-off, d.rng.Uint64N(3*modelBS)+1)
		d.fill(name, off, n, byte('a'+d.rng.IntN(26)))
	case r < 60:
		off := pos()
		n := min(v.size-off, d.rng.Uint64N(6*modelBS)+1)
		d.trim(name, off, n)
	case r < 75:
		d.seq++
		d.snapshot(name, fmt.Sprintf("s%d", d.seq))
	case r < 85 && len(snaps) > 0:
		d.seq++
		p := snaps[d.rng.IntN(len(snaps))]
		size := d.vols[p].size
		if d.rng.IntN(2) == 0 {
			size += d.rng.Uint64N(600 * modelBS)
		}
		d.clone(p, fmt.Sprintf("c%d", d.seq), size)
	default:
		d.resize(name, d.rng.Uint64N(600*modelBS)+1)
	}
}

func (d *diffEnv) checkAll() {
	snaps := d.names(true)
	for _, name := range slices.Sorted(maps.Keys(d.vols)) {
		d.parts = true
		d.check(name, "")
		for i, from := range snaps {
			d.parts = i == len(snaps)-1 // in parts: against one snapshot
			d.check(name, from)
		}
	}
}

func TestDiffRefusals(t *testing.T) {
	d := newDiffEnv(t, 4)
	d.create("v", 8*modelBS)
	d.snapshot("v", "s")
	d.create("w", 8*modelBS)
	ctx, e := d.ctx, d.env.e
	if _, err := e.Diff(ctx, "v", "w", 0, 8*modelBS); !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("diff from a volume: %v, want ErrInvalid naming it", err)
	}
	if _, err := e.Diff(ctx, "v", "nope", 0, 8*modelBS); !errors.Is(err, errs.ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("diff from a missing snapshot: %v, want ErrNotFound naming it", err)
	}
	if _, err := e.Diff(ctx, "gone", "s", 0, modelBS); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("diff of a missing volume: %v, want ErrNotFound", err)
	}
	if _, err := e.Diff(ctx, "v", "s", 0, 9*modelBS); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("diff past the end: %v, want ErrInvalid", err)
	}
	if _, err := e.DiffPart(ctx, "v", "s", 9*modelBS, 1, 0); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("diff part past the end: %v, want ErrInvalid", err)
	}
	// Another block size shares nothing: refused, naming both.
	e2, err := New(d.env.maps, d.env.data, Options{Owner: "host-a", BlockSize: 2 * modelBS})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Create(ctx, "big", 8*modelBS); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Diff(ctx, "big", "s", 0, 8*modelBS); !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), `"s"`) {
		t.Errorf("diff across block sizes: %v, want ErrInvalid", err)
	}
}
