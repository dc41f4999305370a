package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// TestCheckFindsSharedOwnedObjects checks that Check, which the model
// tests and the crash tests run over shared storage, finds an object two
// volumes would both write in place: a header copied to a second name.
func TestCheckFindsSharedOwnedObjects(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	if err := v.e.Create(ctx, "check-vol", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, v.e, v.dataStore(), "check-vol", 0, fill('a', 10)); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Snapshot(ctx, "check-vol", "check-snap"); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, v.e, v.dataStore(), "check-vol", 0, fill('b', 10)); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, v.maps); err != nil {
		t.Fatalf("a consistent store: %v", err)
	}
	if err := v.maps.Copy(ctx, "check-vol", "check-twin"); err != nil {
		t.Fatal(err)
	}
	err := Check(ctx, v.maps)
	if !errors.Is(err, errs.ErrCorrupt) || !strings.Contains(err.Error(), `"check-twin"`) {
		t.Fatalf("Check with two volumes owning the same objects: %v", err)
	}
}

// ckWorld: volume vol (500 blocks of 4 KiB: a tree of height 2) with
// data in blocks 0, 1 and 300 in a first session, its snapshot snap, then
// blocks 2 and 400 written in vol (a second session: both leaves and the
// root copied on write) and clone, a clone of snap with block 5 written.
// Nothing is locked afterwards.
type ckWorld struct {
	v *env
}

const checkVolSize = 500 * modelBS

func newCkWorld(t *testing.T) *ckWorld {
	t.Helper()
	ctx := context.Background()
	v := newEnv(t, modelBS)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.e.Create(ctx, "vol", checkVolSize))
	for _, b := range []uint64{0, 1, 300} {
		must(writeVol(ctx, v.e, v.dataStore(), "vol", b*modelBS, fill('a'+byte(b%26), modelBS)))
	}
	must(v.e.Snapshot(ctx, "vol", "snap"))
	for _, b := range []uint64{2, 400} {
		must(writeVol(ctx, v.e, v.dataStore(), "vol", b*modelBS, fill('v', modelBS)))
	}
	must(v.e.Clone(ctx, "snap", "clone", checkVolSize))
	must(writeVol(ctx, v.e, v.dataStore(), "clone", 5*modelBS, fill('c', modelBS)))
	for _, n := range []string{"vol", "clone"} {
		must(v.e.Close(ctx, n))
	}
	return &ckWorld{v: v}
}

// header reads volume name's header as stored.
func (w *ckWorld) header(t *testing.T, name string) *header {
	t.Helper()
	h, err := w.v.e.readHeaderRaw(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// reached lists what volume name's map reaches.
func (w *ckWorld) reached(t *testing.T, name string) []reached {
	t.Helper()
	var out []reached
	if err := w.v.e.reach(context.Background(), name, w.header(t, name), func(o reached) error {
		out = append(out, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// object returns what volume name reaches that is, or is not, a page
// at level (data: level 0) and owned or not by name.
func (w *ckWorld) object(t *testing.T, name string, page bool, level uint8, owned bool) reached {
	t.Helper()
	for _, o := range w.reached(t, name) {
		if o.page == page && o.key.level == level && o.owned == owned {
			return o
		}
	}
	t.Fatalf("volume %s reaches no %v/%d/%v object", name, page, level, owned)
	return reached{}
}

// leaf is volume name's leaf page of block.
func (w *ckWorld) leaf(t *testing.T, name string, block uint64) reached {
	t.Helper()
	for _, o := range w.reached(t, name) {
		if o.page && o.key == leafKey(block) {
			return o
		}
	}
	t.Fatalf("volume %s has no leaf for block %d", name, block)
	return reached{}
}

// dataOf is the data object volume name maps block to.
func (w *ckWorld) dataOf(t *testing.T, name string, block uint64) string {
	t.Helper()
	for _, o := range w.reached(t, name) {
		if !o.page && o.key.index == block {
			return o.name
		}
	}
	t.Fatalf("volume %s maps no block %d", name, block)
	return ""
}

// raw reads object name of kind k from the maps store.
func (w *ckWorld) raw(t *testing.T, k kind, name string) (object, []byte) {
	t.Helper()
	b := make([]byte, 2*k.slot)
	if _, err := w.v.maps.ReadAt(context.Background(), name, b, 0); err != nil {
		t.Fatal(err)
	}
	o, err := decodeObject(k, b)
	if err != nil {
		t.Fatal(err)
	}
	return o, b
}

// setEntries rewrites the page of volume vol at r with entries changed
// by fn, in place, as the engine would.
func (w *ckWorld) setEntries(t *testing.T, vol string, r reached, fn func(p *page)) {
	t.Helper()
	ctx := context.Background()
	h := w.header(t, vol)
	p, err := w.v.e.readPage(ctx, h, r.key, r.ref)
	if err != nil {
		t.Fatal(err)
	}
	fn(p)
	if err := w.v.e.writePage(ctx, h, p, false); err != nil {
		t.Fatal(err)
	}
}

// setSpans rewrites volume vol's header with spans.
func (w *ckWorld) setSpans(t *testing.T, vol string, spans []span) {
	t.Helper()
	h := w.header(t, vol)
	h.spans = spans
	if err := w.v.e.writeHeader(context.Background(), vol, h); err != nil {
		t.Fatal(err)
	}
}

type ckWant struct{ vol, obj, kind string }

func (w ckWant) String() string { return w.vol + " " + w.obj + " " + w.kind }

// checkNow runs CheckVolumes with no pause before its second look.
func checkNow(t *testing.T, e *Engine, names []string) *CheckReport {
	t.Helper()
	r, err := e.checkVolumes(context.Background(), names, nil, checkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Problems {
		if p.Detail == "" {
			t.Errorf("problem without detail: %+v", p)
		}
	}
	return r
}

func problemSet(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, ckWant{p.Volume, p.Object, p.Kind}.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestCheckVolumesNamesEachDamage damages storage by hand in each way
// CheckVolumes knows, one at a time in a fresh world, and checks that it
// reports exactly the (volume, object, kind) expected, and nothing on the
// world undamaged.
func TestCheckVolumesNamesEachDamage(t *testing.T) {
	ctx := context.Background()
	flip := func(t *testing.T, w *ckWorld, name string, off int64) {
		t.Helper()
		if err := faultstore.FlipByte(ctx, w.v.maps, name, off, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		what   string
		damage func(t *testing.T, w *ckWorld) []ckWant
	}{
		{"nothing", func(t *testing.T, w *ckWorld) []ckWant { return nil }},
		{"a copy of a header", func(t *testing.T, w *ckWorld) []ckWant {
			flip(t, w, "vol", int64(kindHeader.slot)+slotHeadLen+30)
			return []ckWant{{"vol", "vol", ProblemDamagedCopy}}
		}},
		{"a header copy left stale", func(t *testing.T, w *ckWorld) []ckWant {
			o, _ := w.raw(t, kindHeader, "vol")
			if o.seq < 2 {
				t.Fatalf("header at sequence number %d", o.seq)
			}
			s, err := encodeSlot(kindHeader, o.seq-1, o.payload)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.v.e.writeSlot(ctx, kindHeader, "vol", 0, s); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"vol", "vol", ProblemDamagedCopy}}
		}},
		{"both copies of a header", func(t *testing.T, w *ckWorld) []ckWant {
			flip(t, w, "vol", slotHeadLen+30)
			flip(t, w, "vol", int64(kindHeader.slot)+slotHeadLen+30)
			return []ckWant{{"vol", "vol", ProblemUnreadable}}
		}},
		{"a copy of an owned leaf", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "vol", 400)
			flip(t, w, l.name, slotHeadLen+100)
			return []ckWant{{"vol", l.name, ProblemDamagedCopy}}
		}},
		{"a copy of a shared leaf", func(t *testing.T, w *ckWorld) []ckWant {
			r := w.leaf(t, "snap", 300)
			if w.leaf(t, "clone", 300).name != r.name {
				t.Fatal("clone does not share snap's leaf of block 300")
			}
			flip(t, w, r.name, int64(kindPage.slot)+8)
			return []ckWant{{"snap", r.name, ProblemDamagedCopy}, {"clone", r.name, ProblemDamagedCopy}}
		}},
		{"both copies of a leaf", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "vol", 400)
			flip(t, w, l.name, slotHeadLen+100)
			flip(t, w, l.name, int64(kindPage.slot)+slotHeadLen+100)
			return []ckWant{{"vol", l.name, ProblemUnreadable}}
		}},
		{"a leaf truncated to 6 bytes", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "vol", 400)
			if err := w.v.maps.Truncate(ctx, l.name, 6); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"vol", l.name, ProblemUnreadable}}
		}},
		{"a leaf truncated to nothing", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "vol", 400)
			if err := w.v.maps.Truncate(ctx, l.name, 0); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"vol", l.name, ProblemDangling}}
		}},
		{"a page deleted", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "clone", 5)
			if err := w.v.maps.Delete(ctx, l.name); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"clone", l.name, ProblemDangling}}
		}},
		{"a shared data object deleted", func(t *testing.T, w *ckWorld) []ckWant {
			d := w.dataOf(t, "snap", 0)
			if err := w.v.data.Delete(ctx, d); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"clone", d, ProblemMissingData}, {"snap", d, ProblemMissingData}, {"vol", d, ProblemMissingData}}
		}},
		{"a data object of the allocation epoch deleted", func(t *testing.T, w *ckWorld) []ckWant {
			d := w.dataOf(t, "vol", 400)
			if o, _ := parseObjectName(d); o.epoch != w.header(t, "vol").alloc().epoch {
				t.Fatalf("%s is not of vol's allocation epoch", d)
			}
			if err := w.v.data.Delete(ctx, d); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"vol", d, ProblemMissingData}}
		}},
		{"an entry beyond the size", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "vol", 400)
			w.setEntries(t, "vol", l, func(p *page) { p.e[250] = p.e[400-256] }) // block 506 of 500
			return []ckWant{{"vol", l.name, ProblemBeyondSize}}
		}},
		{"an entry with a prefix out of the table", func(t *testing.T, w *ckWorld) []ckWant {
			l := w.leaf(t, "vol", 400)
			w.setEntries(t, "vol", l, func(p *page) { p.e[10] = entry{present: true, ref: ref{prefix: 7, epoch: 1}} })
			return []ckWant{{"vol", l.name, ProblemBadPrefix}}
		}},
		{"an epoch record lowered", func(t *testing.T, w *ckWorld) []ckWant {
			o, _ := w.raw(t, kindEpoch, epochName("vol"))
			if err := w.v.e.updateObject(ctx, kindEpoch, epochName("vol"), o.seq+1, encodeEpoch(1), 0); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"vol", epochName("vol"), ProblemEpochBehind}}
		}},
		{"an epoch record deleted", func(t *testing.T, w *ckWorld) []ckWant {
			if err := w.v.maps.Delete(ctx, epochName("vol")); err != nil {
				t.Fatal(err)
			}
			return []ckWant{{"vol", epochName("vol"), ProblemEpochMissing}}
		}},
		{"a copy of an epoch record", func(t *testing.T, w *ckWorld) []ckWant {
			flip(t, w, epochName("vol"), slotHeadLen+7)
			return []ckWant{{"vol", epochName("vol"), ProblemDamagedCopy}}
		}},
		{"both copies of an epoch record", func(t *testing.T, w *ckWorld) []ckWant {
			flip(t, w, epochName("clone"), slotHeadLen+7)
			flip(t, w, epochName("clone"), int64(kindEpoch.slot)+slotHeadLen+7)
			return []ckWant{{"clone", epochName("clone"), ProblemUnreadable}}
		}},
		{"an owned page below a shared one", func(t *testing.T, w *ckWorld) []ckWant {
			// deep: block 0 in a first session (root and leaf 0 at
			// epoch e1), block 300 in a second (leaf 1 at e2, the root
			// updated in place); then its header owns e2 only.
			for _, b := range []uint64{0, 300} {
				if b == 0 {
					if err := w.v.e.Create(ctx, "deep", checkVolSize); err != nil {
						t.Fatal(err)
					}
				}
				if err := writeVol(ctx, w.v.e, w.v.dataStore(), "deep", b*modelBS, fill('d', 10)); err != nil {
					t.Fatal(err)
				}
				if err := w.v.e.Close(ctx, "deep"); err != nil {
					t.Fatal(err)
				}
			}
			h := w.header(t, "deep")
			a := h.alloc()
			w.setSpans(t, "deep", []span{{prefix: a.prefix, from: a.epoch, to: a.epoch}})
			l := w.leaf(t, "deep", 300)
			if root := w.object(t, "deep", true, 1, false); l.ref.epoch != a.epoch || root.ref.epoch == a.epoch {
				t.Fatalf("leaf %s, root %s", l.name, root.name)
			}
			return []ckWant{{"deep", l.name, ProblemOwnedBelowShared}}
		}},
		{"a header copied to another name", func(t *testing.T, w *ckWorld) []ckWant {
			if err := w.v.maps.Copy(ctx, "vol", "twin"); err != nil {
				t.Fatal(err)
			}
			var ws []ckWant
			for _, o := range w.reached(t, "vol") {
				if o.owned {
					ws = append(ws, ckWant{"vol", o.name, ProblemOwnedTwice}, ckWant{"twin", o.name, ProblemOwnedTwice})
				}
			}
			return ws
		}},
		{"a volume owning what its snapshot reaches", func(t *testing.T, w *ckWorld) []ckWant {
			h := w.header(t, "vol")
			w.setSpans(t, "vol", []span{{prefix: h.alloc().prefix, from: 1, to: h.alloc().epoch}})
			var ws []ckWant
			for _, n := range []string{"snap", "clone"} {
				h := w.header(t, n)
				for _, o := range w.reached(t, n) {
					if h.prefixes[o.ref.prefix] == "vol" {
						ws = append(ws, ckWant{n, o.name, ProblemOwnedShared})
					}
				}
			}
			return ws
		}},
	} {
		t.Run(strings.ReplaceAll(tc.what, " ", "-"), func(t *testing.T) {
			w := newCkWorld(t)
			var wants []string
			for _, x := range tc.damage(t, w) {
				wants = append(wants, x.String())
			}
			slices.Sort(wants)
			r := checkNow(t, w.v.e, nil)
			if got := problemSet(r.Problems); !slices.Equal(got, wants) {
				t.Fatalf("problems:\n%s\nwant:\n%s\nreport: %+v", strings.Join(got, "\n"), strings.Join(wants, "\n"), r.Problems)
			}
			if r.Volumes < 2 || r.Pages == 0 || r.DataObjects == 0 {
				t.Fatalf("report counts %+v", r)
			}
			if len(wants) == 0 {
				return
			}
			// Check (the tests' wrapper) fails on the same, unless the
			// only problems are damaged copies.
			err := Check(ctx, w.v.maps)
			if onlyCopies := !slices.ContainsFunc(r.Problems, func(p Problem) bool {
				return p.Kind != ProblemDamagedCopy && p.Kind != ProblemMissingData
			}); onlyCopies != (err == nil) {
				t.Fatalf("Check: %v", err)
			}
		})
	}
}

// randomOps runs n random volume operations on volumes r0..r4 (and their
// snapshots and clones) with rng; errors of operations that do not apply
// (a volume missing, locked, busy) are part of the game.
func randomOps(ctx context.Context, v *env, rng *rand.Rand, n int, tag string) {
	vols := []string{"r0", "r1", "r2", "r3", "r4"}
	pick := func() string { return vols[rng.IntN(len(vols))] }
	for i := 0; i < n && ctx.Err() == nil; i++ {
		name := pick()
		size := uint64(64+rng.IntN(600)) * modelBS
		if _, err := v.e.Info(ctx, name); errors.Is(err, errs.ErrNotFound) {
			_ = v.e.Create(ctx, name, size)
			continue
		}
		switch op := rng.IntN(40); {
		case op < 20:
			b := uint64(rng.IntN(700))
			_ = writeVol(ctx, v.e, v.dataStore(), name, b*modelBS, fill(byte('a'+rng.IntN(26)), 1+rng.IntN(2*modelBS)))
		case op < 23:
			_ = v.e.Snapshot(ctx, name, fmt.Sprintf("%s-s%s%d", name, tag, i))
		case op < 26:
			var snaps []string
			_ = v.e.List(ctx, func(n string) error {
				if strings.HasPrefix(n, name+"-s") && !strings.Contains(n, "-c") {
					snaps = append(snaps, n)
				}
				return nil
			})
			if len(snaps) > 0 {
				_ = v.e.Clone(ctx, snaps[rng.IntN(len(snaps))], pick(), size)
			}
		case op < 29:
			b := uint64(rng.IntN(700))
			_ = v.e.Trim(ctx, name, b*modelBS, uint64(1+rng.IntN(300))*modelBS)
		case op < 32:
			_ = v.e.Resize(ctx, name, size, true)
		case op < 34:
			_ = v.e.Rename(ctx, name, pick())
		case op < 35:
			_ = v.e.Remove(ctx, name)
		case op < 36:
			var all []string
			_ = v.e.List(ctx, func(n string) error { all = append(all, n); return nil })
			if len(all) > 0 {
				_ = v.e.Remove(ctx, all[rng.IntN(len(all))])
			}
		default:
			_ = v.e.Close(ctx, name) // the next write starts a session
		}
	}
}

// TestCheckVolumesCleanAfterRandomOps: after random operations, a check
// of every volume finds nothing, and so does a check of some of them.
func TestCheckVolumesCleanAfterRandomOps(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(3) {
		v := newEnv(t, modelBS)
		randomOps(ctx, v, rand.New(rand.NewPCG(seed, 1)), 300, "")
		r := checkNow(t, v.e, nil)
		if len(r.Problems) != 0 || r.Omitted != 0 {
			t.Fatalf("seed %d: %d problems: %v", seed, len(r.Problems)+r.Omitted, r.Problems)
		}
		if r.Volumes == 0 || r.Pages == 0 || r.DataObjects == 0 {
			t.Fatalf("seed %d: checked %+v", seed, r)
		}
		var some []string
		_ = v.e.List(ctx, func(n string) error {
			if len(some) < 2 {
				some = append(some, n)
			}
			return nil
		})
		if r := checkNow(t, v.e, some); len(r.Problems) != 0 || r.Volumes != len(some) {
			t.Fatalf("seed %d: check of %q: %+v", seed, some, r)
		}
		if err := Check(ctx, v.maps); err != nil {
			t.Fatalf("seed %d: Check: %v", seed, err)
		}
		t.Logf("seed %d: %d volumes, %d pages, %d data objects", seed, r.Volumes, r.Pages, r.DataObjects)
	}
}

// TestCheckVolumesUnderConcurrentChanges runs checks while three
// goroutines change volumes at random (writes to zero blocks, snapshots,
// clones, trims, shrinks, renames, removes) until 10 checks have seen
// candidates in their first walk (a page deleted under a header read
// before, a copy between the two writes of an update, a data object not
// written yet ...): no check may report anything, since what a first
// walk finds is looked at again before it is reported.
func TestCheckVolumesUnderConcurrentChanges(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	v.log = slog.New(slog.DiscardHandler)
	v.restart(t)
	// The writers stop between batches, never in the middle of an
	// operation: a write cancelled between its MapWrite and its data write
	// leaves a mapped block with no object, which a check rightly names
	// (missing-data, as after a crash).
	var wg sync.WaitGroup
	var stopped atomic.Bool
	stop := func() { stopped.Store(true) }
	defer func() { stop(); wg.Wait() }()
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stopped.Load(); i++ {
				randomOps(ctx, v, rand.New(rand.NewPCG(uint64(g), uint64(i))), 20, fmt.Sprintf("%d.%d.", g, i))
			}
		}()
	}
	seen := map[string]int{}
	looks, checks, vols := 0, 0, 0
	o := checkOptions{settle: 100 * time.Millisecond, firstLook: func(found []Problem) {
		looks++
		for _, p := range found {
			seen[p.Kind]++
		}
	}}
	// Only checks that found volumes count towards the bound: on a fast
	// machine thousands of checks of the empty pool ran before the
	// writers had created anything.
	busy := 0
	for ; looks < 10; checks++ {
		if busy > 5000 {
			t.Fatalf("%d checks of volumes, %d second looks: the changes do not show", busy, looks)
		}
		if checks-busy > 100000 {
			t.Fatalf("%d checks found no volume: the writers make none", checks-busy)
		}
		r, err := v.e.checkVolumes(ctx, nil, nil, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Problems) != 0 || r.Omitted != 0 {
			t.Fatalf("check %d, during changes: %d problems: %v", checks, len(r.Problems)+r.Omitted, r.Problems)
		}
		if r.Volumes > 0 {
			busy++
		}
		vols += r.Volumes
	}
	stop()
	wg.Wait()
	if r := checkNow(t, v.e, nil); len(r.Problems) != 0 {
		t.Fatalf("once quiet: %v", r.Problems)
	}
	t.Logf("%d checks of %d volumes in all during the changes; %d first walks found: %v", checks, vols, looks, seen)
}

// TestCheckVolumesRenameSeenHalfWay: a walk that reads a volume's header
// while a rename has only started (renaming to B) and B's header once the
// rename is over (A deleted, B's flag cleared) sees one volume under two
// names: it is walked once, not reported as two volumes owning the same
// objects.
func TestCheckVolumesRenameSeenHalfWay(t *testing.T) {
	ctx := context.Background()
	w := newCkWorld(t)
	h := w.header(t, "vol")
	ha := h.clone()
	ha.flags |= flagRenaming
	ha.link = "volb"
	if err := w.v.e.writeHeader(ctx, "vol", ha); err != nil {
		t.Fatal(err)
	}
	if err := w.v.e.createHeader(ctx, "volb", h.clone()); err != nil {
		t.Fatal(err)
	}
	r := checkNow(t, w.v.e, nil)
	if len(r.Problems) != 0 || r.Volumes != 3 {
		t.Fatalf("%d volumes: %v", r.Volumes, r.Problems)
	}
}

// TestCheckVolumesNames: named volumes are checked alone; a name of no
// volume, or not a volume name, is an error; progress counts them.
func TestCheckVolumesNames(t *testing.T) {
	ctx := context.Background()
	w := newCkWorld(t)
	var calls [][2]int
	r, err := w.v.e.CheckVolumes(ctx, []string{"clone", "snap"}, func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err != nil || r.Volumes != 2 || len(r.Problems) != 0 {
		t.Fatalf("check of clone and snap: %+v %v", r, err)
	}
	if !slices.Equal(calls, [][2]int{{1, 2}, {2, 2}}) {
		t.Fatalf("progress %v", calls)
	}
	if _, err := w.v.e.CheckVolumes(ctx, []string{"vol", "nosuch"}, nil); !errors.Is(err, errs.ErrNotFound) || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Fatalf("check of a volume that does not exist: %v", err)
	}
	if _, err := w.v.e.CheckVolumes(ctx, []string{"vol_epoch"}, nil); !errors.Is(err, errs.ErrInvalid) {
		t.Fatalf("check of an epoch record: %v", err)
	}
	// A problem of a volume not named is not reported.
	if err := w.v.maps.Delete(ctx, w.leaf(t, "vol", 400).name); err != nil {
		t.Fatal(err)
	}
	if r := checkNow(t, w.v.e, []string{"snap"}); len(r.Problems) != 0 {
		t.Fatalf("check of snap: %v", r.Problems)
	}
	if r := checkNow(t, w.v.e, []string{"vol"}); len(r.Problems) != 1 {
		t.Fatalf("check of vol: %v", r.Problems)
	}
}

// TestCheckVolumesFormatFixtures: the volumes every earlier format
// version wrote check clean (version 1 copies are not damaged copies).
func TestCheckVolumesFormatFixtures(t *testing.T) {
	dirs, err := filepath.Glob("testdata/format-v*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no format fixtures: %v", err)
	}
	for _, dir := range dirs {
		v, vols := loadFixture(t, dir)
		r := checkNow(t, v.e, nil)
		if len(r.Problems) != 0 || r.Volumes != len(vols) {
			t.Fatalf("%s: %d volumes (%d): %v", dir, r.Volumes, len(vols), r.Problems)
		}
	}
}
