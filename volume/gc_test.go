package volume

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// Tests of the garbage collector (gc.go, docs/gc.md): what it collects and
// what it keeps. The hazards of gc-design.md, each in a deterministic
// interleaving, are in gc_hazard_test.go; the randomized two-host test
// and the collector killed at every point in gc_model_test.go.

// gcListed lists the objects a collection may delete, as it does: data
// objects of the data store and map pages of the maps store.
func gcListed(t testing.TB, e *Engine) map[string]bool {
	t.Helper()
	out := make(map[string]bool)
	for _, s := range []struct {
		st   store.Store
		page bool
	}{{e.data, false}, {e.maps, true}} {
		err := s.st.List(context.Background(), "", func(n string) error {
			if on, ok := parseObjectName(n); ok && on.page == s.page {
				out[n] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// gcReachable is every page and data object a live header reaches, read
// from storage.
func gcReachable(t testing.TB, e *Engine) map[string]bool {
	t.Helper()
	ctx := context.Background()
	out := make(map[string]bool)
	err := e.List(ctx, func(n string) error {
		h, err := e.readHeaderRaw(ctx, n)
		if err != nil {
			return err
		}
		return e.reach(ctx, n, h, func(o reached) error { out[o.name] = true; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// gcGarbage is what is listed and not reachable, sorted.
func gcGarbage(t testing.TB, e *Engine) []string {
	t.Helper()
	r := gcReachable(t, e)
	var out []string
	for n := range gcListed(t, e) {
		if !r[n] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func runGC(t testing.TB, e *Engine, o GCOptions) *GCReport {
	t.Helper()
	rep, err := e.GC(context.Background(), o)
	if err != nil {
		t.Fatalf("gc on %s: %v", e.owner, err)
	}
	return rep
}

// oracle checks every volume of want against its bytes, through e.
func checkOracle(t testing.TB, e *Engine, want map[string]*mvol) {
	t.Helper()
	ctx := context.Background()
	for _, n := range slices.Sorted(maps.Keys(want)) {
		v := want[n]
		got, err := readVol(ctx, e, e.data, n, 0, v.size)
		if err != nil {
			t.Fatalf("read %s: %v", n, err)
		}
		if w := v.read(0, v.size); !bytes.Equal(got, w) {
			for b := uint64(0); b*modelBS < v.size; b++ {
				lo, hi := b*modelBS, min((b+1)*modelBS, v.size)
				if !bytes.Equal(got[lo:hi], w[lo:hi]) {
					t.Fatalf("volume %s block %d differs from the oracle:\n got %s\nwant %s", n, b, runs(got[lo:hi]), runs(w[lo:hi]))
				}
			}
		}
	}
}

// gcFixture drives one engine and an oracle.
type gcFixture struct {
	t    testing.TB
	e    *Engine
	vols map[string]*mvol
}

func (f *gcFixture) create(name string, blocks uint64) {
	f.t.Helper()
	if err := f.e.Create(context.Background(), name, blocks*modelBS); err != nil {
		f.t.Fatal(err)
	}
	f.vols[name] = &mvol{size: blocks * modelBS, blocks: map[uint64][]byte{}}
}

// write fills blocks [b0, b1) of name with c (whole blocks, or n bytes at
// each block's start if n > 0).
func (f *gcFixture) write(name string, b0, b1 uint64, c byte) {
	f.t.Helper()
	f.writeOn(f.e, name, b0, b1, c)
}

func (f *gcFixture) writeOn(e *Engine, name string, b0, b1 uint64, c byte) {
	f.t.Helper()
	p := bytes.Repeat([]byte{c}, int((b1-b0)*modelBS))
	if err := writeVol(context.Background(), e, e.data, name, b0*modelBS, p); err != nil {
		f.t.Fatalf("write %s blocks %d-%d: %v", name, b0, b1, err)
	}
	f.vols[name].write(b0*modelBS, p)
}

func (f *gcFixture) snapshot(name, snap string) {
	f.t.Helper()
	if err := f.e.Snapshot(context.Background(), name, snap); err != nil {
		f.t.Fatal(err)
	}
	s := f.vols[name].clone()
	s.snap = true
	f.vols[snap] = s
}

func (f *gcFixture) clone(parent, name string) {
	f.t.Helper()
	if err := f.e.Clone(context.Background(), parent, name, 0); err != nil {
		f.t.Fatal(err)
	}
	c := f.vols[parent].clone()
	c.snap = false
	f.vols[name] = c
}

func (f *gcFixture) remove(name string) {
	f.t.Helper()
	if err := f.e.Remove(context.Background(), name); err != nil {
		f.t.Fatal(err)
	}
	delete(f.vols, name)
}

func (f *gcFixture) rename(from, to string) {
	f.t.Helper()
	if err := f.e.Rename(context.Background(), from, to); err != nil {
		f.t.Fatal(err)
	}
	f.vols[to] = f.vols[from]
	delete(f.vols, from)
}

func newGCFixture(t testing.TB) (*env, *gcFixture) {
	v := newEnv(t, modelBS)
	return v, &gcFixture{t: t, e: v.e, vols: map[string]*mvol{}}
}

// TestGCCollectsRemovedVolumesAndSnapshots: the objects only removed
// snapshots reached, and those a removed volume reached without owning
// them (its snapshot removed before it), are collected; a dry run lists
// exactly them and deletes nothing; nothing reachable goes.
func TestGCCollectsRemovedVolumesAndSnapshots(t *testing.T) {
	_, f := newGCFixture(t)
	f.create("vm", 64)
	f.write("vm", 0, 20, 'a')
	f.snapshot("vm", "s1")
	f.write("vm", 0, 10, 'b')
	f.snapshot("vm", "s2")
	f.write("vm", 5, 15, 'c')
	f.snapshot("vm", "s3")
	f.write("vm", 0, 3, 'e')
	f.clone("s2", "c1")
	f.write("c1", 0, 3, 'd')
	f.remove("s1") // its own objects: 'a' of blocks 0-9
	f.remove("s3") // nothing of its own: vm still reaches 'c'
	f.remove("vm") // deletes what it owned ('e'); 'c' (s3's epoch) stays
	garbage := gcGarbage(t, f.e)
	if len(garbage) < 20 {
		t.Fatalf("the scenario left %d unreachable objects, want 'a' 0-9, 'c' 5-14 and their pages: %q", len(garbage), garbage)
	}
	before := gcListed(t, f.e)

	dry := runGC(t, f.e, GCOptions{DryRun: true})
	if !slices.Equal(dry.Objects, garbage) {
		t.Fatalf("dry run lists\n%q\nwant the unreachable objects\n%q", dry.Objects, garbage)
	}
	if after := gcListed(t, f.e); !maps.Equal(after, before) {
		t.Fatalf("dry run changed the stores: %d objects before, %d after", len(before), len(after))
	}
	if !dry.DryRun || dry.Deleted != len(garbage) || dry.Protected != 0 || dry.Bytes == 0 ||
		dry.DeletedData+dry.DeletedPages != dry.Deleted || dry.DeletedData != 20 {
		t.Fatalf("dry run report %+v, want %d objects (20 of them data)", dry, len(garbage))
	}
	checkOracle(t, f.e, f.vols)

	rep := runGC(t, f.e, GCOptions{})
	if rep.Deleted != len(garbage) || rep.DeletedData != 20 || rep.Bytes != dry.Bytes || rep.Objects != nil {
		t.Fatalf("report %+v, want %d objects deleted (20 data), %d bytes as the dry run said", rep, len(garbage), dry.Bytes)
	}
	if g := gcGarbage(t, f.e); len(g) != 0 {
		t.Fatalf("after gc, unreachable objects left: %q", g)
	}
	if r := gcReachable(t, f.e); !maps.Equal(r, gcListed(t, f.e)) {
		t.Fatalf("after gc the stores hold %d objects, %d reachable", len(gcListed(t, f.e)), len(r))
	}
	checkOracle(t, f.e, f.vols)
	if rep := runGC(t, f.e, GCOptions{}); rep.Deleted != 0 {
		t.Fatalf("a second gc deleted %d objects", rep.Deleted)
	}
}

// TestGCCollectsCrashOrphans: a copy made by a write whose process died
// before the map commit is collected once the volume has moved to a new
// session (until then it is the volume's allocation identity and kept);
// hand-made orphans of an old epoch are collected; objects of a name with
// no epoch record are kept and reported; nothing else in the stores is
// touched.
func TestGCCollectsCrashOrphans(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 32)
	f.write("vm", 0, 8, 'a')
	f.snapshot("vm", "s")
	// The write of block 3 dies after its copy is durable.
	crashed := false
	v.e.hook = func(point, name string) {
		if point == "copied" && !crashed {
			crashed = true
			v.plan.Arm(v.plan.Index(), faultstore.Crash)
		}
	}
	if err := writeVol(ctx, v.e, v.e.data, "vm", 3*modelBS, []byte("lost")); err == nil {
		t.Fatal("the write survived the crash")
	}
	v.crash(t)
	f.e = v.e
	h, err := v.e.readHeader(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	orphan := DataObject("vm", h.alloc().epoch, 3)
	if _, err := v.data.Stat(ctx, orphan); err != nil {
		t.Fatalf("the crash left no orphan copy %s: %v", orphan, err)
	}
	// By hand: an old epoch's data object and page, objects of a name
	// nobody ever had, and other objects of no collectable form.
	old := h.alloc().epoch - 1 // the snapshot's
	handData, handPage := DataObject("vm", old, 29), pageObject("vm", old, pageKey{0, 7})
	for _, o := range []struct {
		st   store.Store
		name string
	}{{v.data, handData}, {v.maps, handPage}, {v.data, DataObject("nobody", 1, 0)}, {v.maps, pageObject("nobody", 1, pageKey{0, 0})},
		{v.data, "some-file"}, {v.maps, "other_epoch"}, {v.maps, "archip_other"}, {v.data, pageObject("vm", old, pageKey{0, 9})},
		{v.maps, DataObject("vm", old, 30)}} {
		if err := o.st.WriteAt(ctx, o.name, []byte("junk"), 0, true); err != nil {
			t.Fatal(err)
		}
	}

	rep := runGC(t, v.e, GCOptions{})
	for _, n := range []string{handData, handPage} {
		if _, err := v.e.maps.Stat(ctx, n); !errors.Is(err, errs.ErrNotFound) {
			if _, err := v.e.data.Stat(ctx, n); !errors.Is(err, errs.ErrNotFound) {
				t.Fatalf("hand-made orphan %s not collected (report %+v)", n, rep)
			}
		}
	}
	if _, err := v.data.Stat(ctx, orphan); err != nil {
		t.Fatalf("the orphan copy %s of the volume's allocation epoch was collected while a write may still link it: %v", orphan, err)
	}
	if rep.Protected == 0 {
		t.Fatalf("report %+v: the orphan of the allocation epoch is not counted as protected", rep)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), `"nobody"`) {
		t.Fatalf("problems %q do not name the prefix without an epoch record", rep.Problems)
	}
	for _, o := range []struct {
		st   store.Store
		name string
	}{{v.data, DataObject("nobody", 1, 0)}, {v.maps, pageObject("nobody", 1, pageKey{0, 0})}, {v.data, "some-file"},
		{v.maps, "other_epoch"}, {v.maps, "archip_other"}, {v.data, pageObject("vm", old, pageKey{0, 9})}, {v.maps, DataObject("vm", old, 30)}} {
		if _, err := o.st.Stat(ctx, o.name); err != nil {
			t.Fatalf("gc touched %s, not its to collect: %v", o.name, err)
		}
	}
	// A write starts a new session: the orphan's epoch is no volume's
	// allocation identity any more.
	f.write("vm", 20, 21, 'n')
	rep = runGC(t, v.e, GCOptions{})
	if _, err := v.data.Stat(ctx, orphan); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("orphan copy %s of a dead session not collected: %v (report %+v)", orphan, err, rep)
	}
	checkOracle(t, v.e, f.vols)
}

// twoEngines returns a second engine of owner over v's stores (another
// host on the same storage).
func twoEngines(t testing.TB, v *env, owner string) *Engine {
	t.Helper()
	e, err := New(v.e.maps, v.e.data, Options{Owner: owner, BlockSize: modelBS})
	if err != nil {
		t.Fatal(err)
	}
	e.fenceWait = 0
	return e
}

// TestGCCollectsForcedUnlockLeftovers: after host-b breaks host-a's lock
// (the volume moves to a fresh identity) and copies blocks away from
// host-a's objects, those objects, late writes of the old holder
// included, are garbage, and host-b's collector deletes them; the blocks
// not copied yet stay.
func TestGCCollectsForcedUnlockLeftovers(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	b := twoEngines(t, v, "host-b")
	f.create("vm", 16)
	f.write("vm", 0, 8, 'a')
	h, _ := v.e.readHeader(ctx, "vm")
	oldEpoch := h.alloc().epoch
	if err := b.Unlock(ctx, "vm", true); err != nil {
		t.Fatal(err)
	}
	f.writeOn(b, "vm", 0, 4, 'b')
	// host-a, fenced, still writes into an object it had mapped.
	if err := v.e.data.WriteAt(ctx, DataObject("vm", oldEpoch, 1), []byte("late"), 0, true); err != nil {
		t.Fatal(err)
	}
	rep := runGC(t, b, GCOptions{})
	for blk := uint64(0); blk < 8; blk++ {
		_, err := v.data.Stat(ctx, DataObject("vm", oldEpoch, blk))
		switch {
		case blk < 4 && !errors.Is(err, errs.ErrNotFound):
			t.Fatalf("block %d of the fenced holder's epoch, copied away, not collected: %v (report %+v)", blk, err, rep)
		case blk >= 4 && err != nil:
			t.Fatalf("block %d of the fenced holder's epoch, still mapped, collected: %v", blk, err)
		}
	}
	if rep.DeletedData != 4 {
		t.Fatalf("report %+v, want the 4 data objects copied away deleted", rep)
	}
	if g := gcGarbage(t, b); len(g) != 0 {
		t.Fatalf("unreachable objects left: %q", g)
	}
	checkOracle(t, b, f.vols)
}

// TestGCProtects: an unreached object whose epoch is its name's newest
// (a create, clone or session may be writing it) and one whose epoch is a
// volume's allocation identity (a write may be linking it) are kept; one
// of an older epoch goes.
func TestGCProtects(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 16)
	f.write("vm", 0, 2, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 0, 1, 'b')
	h, _ := v.e.readHeader(ctx, "vm")
	ident := h.alloc().epoch
	rec, err := v.e.bumpEpoch(ctx, "vm") // as a session starting would
	if err != nil {
		t.Fatal(err)
	}
	if rec <= ident {
		t.Fatalf("record %d not above the identity %d", rec, ident)
	}
	newest, identObj, older := DataObject("vm", rec, 5), DataObject("vm", ident, 9), DataObject("vm", ident-1, 7)
	for _, n := range []string{newest, identObj, older} {
		if err := v.data.WriteAt(ctx, n, []byte("x"), 0, true); err != nil {
			t.Fatal(err)
		}
	}
	rep := runGC(t, v.e, GCOptions{})
	if rep.Protected != 2 || rep.Deleted != 1 {
		t.Fatalf("report %+v, want 2 protected, 1 deleted", rep)
	}
	for n, keep := range map[string]bool{newest: true, identObj: true, older: false} {
		if _, err := v.data.Stat(ctx, n); (err == nil) != keep {
			t.Fatalf("%s: kept %v, want %v", n, err == nil, keep)
		}
	}
	checkOracle(t, v.e, f.vols)
}

// TestGCMarkers: snapshot, clone and rename leave a root marker each;
// the collector walks and then deletes them. A marker whose name's lock
// another host holds (its operation may be in flight: a rollback of an
// existing volume, a snapshot not finished) is kept until a later
// collection finds the lock free.
func TestGCMarkers(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 16)
	f.write("vm", 0, 2, 'a')
	f.snapshot("vm", "s")
	f.clone("s", "c")
	f.rename("c", "d")
	markers := func() []string {
		var out []string
		if err := v.maps.List(ctx, rootMarkerPrefix, func(n string) error { out = append(out, n); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	if m := markers(); !slices.Equal(m, []string{rootMarker("c"), rootMarker("d"), rootMarker("s")}) {
		t.Fatalf("markers %q, want those of s, c and d", m)
	}
	// A marker of an existing volume whose lock host-b holds, and one of
	// a name with no volume, locked too: both operations may be running.
	b := twoEngines(t, v, "host-b")
	if err := v.e.Close(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vm", "x"} {
		if err := v.e.markRoot(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := b.locker.TryLock(ctx, lockName(n), "host-b"); err != nil {
			t.Fatal(err)
		}
	}
	rep := runGC(t, v.e, GCOptions{DryRun: true})
	if rep.Markers != 5 || rep.MarkersDeleted != 0 || len(markers()) != 5 {
		t.Fatalf("dry run: report %+v, markers %q: want 5 processed, none deleted", rep, markers())
	}
	rep = runGC(t, v.e, GCOptions{})
	if m := markers(); rep.Markers != 5 || rep.MarkersDeleted != 3 || !slices.Equal(m, []string{rootMarker("vm"), rootMarker("x")}) {
		t.Fatalf("report %+v, markers left %q: want those of the locked names only", rep, m)
	}
	for _, n := range []string{"vm", "x"} {
		if err := b.locker.Unlock(ctx, lockName(n), "host-b", false); err != nil {
			t.Fatal(err)
		}
	}
	rep = runGC(t, v.e, GCOptions{})
	if m := markers(); rep.MarkersDeleted != 2 || len(m) != 0 {
		t.Fatalf("report %+v, markers left %q", rep, m)
	}
	for _, n := range []string{"vm", "x"} {
		if o, err := v.e.locker.LockOwner(ctx, lockName(n)); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("lock of %s held by %q after gc (%v)", n, o, err)
		}
	}
	checkOracle(t, v.e, f.vols)
}

// TestGCLock: one collection at a time in a pool. Another host's running
// collector makes gc fail with ErrLocked naming the host; force breaks
// its lock; a second gc in the same process fails too; the lock and the
// intent go back at the end.
func TestGCLock(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	in := &memIntents{}
	e, err := New(v.e.maps, v.e.data, Options{Owner: "host-a", BlockSize: modelBS, Intents: in})
	if err != nil {
		t.Fatal(err)
	}
	f.e = e
	f.create("vm", 4)
	f.write("vm", 0, 1, 'a')
	gl := lockName(gcLockName)
	if err := e.locker.TryLock(ctx, gl, "host-b"); err != nil {
		t.Fatal(err)
	}
	_, err = e.GC(ctx, GCOptions{})
	var le *store.LockedError
	if !errors.Is(err, errs.ErrLocked) || !errors.As(err, &le) || le.Owner != "host-b" ||
		!strings.Contains(err.Error(), "garbage collection running on host host-b") {
		t.Fatalf("gc while host-b collects: %v, want ErrLocked naming host-b", err)
	}
	if p, _ := in.Pending(); len(p) != 0 {
		t.Fatalf("intents pending after a refused gc: %q", p)
	}
	if o, _ := e.locker.LockOwner(ctx, gl); o != "host-b" {
		t.Fatalf("the refused gc changed the lock: held by %q", o)
	}
	var inner error
	rep, err := e.GC(ctx, GCOptions{Force: true, hook: func(step string) {
		if step == "listed" {
			if o, _ := e.locker.LockOwner(ctx, gl); o != "host-a" {
				t.Errorf("during a forced gc the lock is %q's", o)
			}
			if p, _ := in.Pending(); !slices.Equal(p, []string{gcLockName}) {
				t.Errorf("during gc the intents are %q", p)
			}
			_, inner = e.GC(ctx, GCOptions{})
		}
	}})
	if err != nil {
		t.Fatalf("forced gc: %v (report %+v)", err, rep)
	}
	if !errors.Is(inner, errs.ErrLocked) || !strings.Contains(inner.Error(), "host-a") {
		t.Fatalf("a second gc in the same process: %v, want ErrLocked", inner)
	}
	if o, err := e.locker.LockOwner(ctx, gl); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("after gc the collector's lock is held by %q (%v)", o, err)
	}
	if p, _ := in.Pending(); len(p) != 0 {
		t.Fatalf("intents pending after gc: %q", p)
	}
	checkOracle(t, e, f.vols)
}

// TestGCLockBrokenMeanwhile: a collection whose lock another host broke
// (force) during its mark deletes nothing.
func TestGCLockBrokenMeanwhile(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 8)
	f.write("vm", 0, 4, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 0, 4, 'b')
	f.remove("s")
	if len(gcGarbage(t, v.e)) == 0 {
		t.Fatal("no garbage to collect")
	}
	before := gcListed(t, v.e)
	_, err := v.e.GC(ctx, GCOptions{hook: func(step string) {
		if step == "marked" {
			if err := v.e.locker.Unlock(ctx, lockName(gcLockName), "host-b", true); err != nil {
				t.Error(err)
			}
			if err := v.e.locker.TryLock(ctx, lockName(gcLockName), "host-b"); err != nil {
				t.Error(err)
			}
		}
	}})
	if !errors.Is(err, errs.ErrNotOwner) || !strings.Contains(err.Error(), "host-b") {
		t.Fatalf("gc whose lock host-b broke: %v, want ErrNotOwner naming host-b", err)
	}
	if after := gcListed(t, v.e); !maps.Equal(before, after) {
		t.Fatal("gc deleted objects after its lock was broken")
	}
	if o, _ := v.e.locker.LockOwner(ctx, lockName(gcLockName)); o != "host-b" {
		t.Fatalf("gc gave back host-b's lock: held by %q", o)
	}
}

// TestGCUnwalkableMap: a volume whose map has an unreadable page keeps
// every object named after a prefix it knows (nothing tells what the
// lost subtree reaches) and gc says so; an unreadable header makes gc
// delete nothing.
func TestGCUnwalkableMap(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 600) // height 2
	f.write("vm", 0, 2, 'a')
	f.write("vm", 300, 302, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 0, 2, 'b')
	f.remove("s") // garbage: 'a' of blocks 0-1, and pages
	f.create("other", 4)
	f.write("other", 0, 1, 'o')
	f.snapshot("other", "os")
	f.write("other", 0, 1, 'p')
	f.remove("os") // garbage of another prefix
	h, _ := v.e.readHeader(ctx, "vm")
	var leaf string
	_ = v.e.reach(ctx, "vm", h, func(o reached) error {
		if o.page && o.key == (pageKey{0, 1}) {
			leaf = o.name
		}
		return nil
	})
	v.restart(t) // a cold cache of shared pages
	f.e = v.e
	flt := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpRead, Object: faultstore.Named(leaf), Errno: syscall.EIO})
	rep := runGC(t, v.e, GCOptions{})
	if !strings.Contains(strings.Join(rep.Problems, "\n"), `volume "vm"`) {
		t.Fatalf("problems %q do not name the volume with an unreadable page", rep.Problems)
	}
	if rep.DeletedData != 1 {
		t.Fatalf("report %+v: want only the garbage of 'other' (1 data object) deleted", rep)
	}
	flt.Remove()
	hdr := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpRead, Object: faultstore.Named("vm"), Errno: syscall.EIO})
	before := gcListed(t, v.e)
	if _, err := v.e.GC(ctx, GCOptions{}); err == nil || !strings.Contains(err.Error(), `"vm"`) {
		t.Fatalf("gc with an unreadable header: %v, want an error naming it", err)
	}
	if after := gcListed(t, v.e); !maps.Equal(before, after) {
		t.Fatal("gc deleted objects though a header could not be read")
	}
	hdr.Remove()
	runGC(t, v.e, GCOptions{})
	if g := gcGarbage(t, v.e); len(g) != 0 {
		t.Fatalf("garbage left once the maps read again: %q", g)
	}
	checkOracle(t, v.e, f.vols)
}

// TestGCProgress: the phases come in order and the last report adds up.
func TestGCProgress(t *testing.T) {
	_, f := newGCFixture(t)
	f.create("vm", 8)
	f.write("vm", 0, 4, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 0, 4, 'b')
	f.remove("s")
	var phases []string
	var last GCProgress
	rep := runGC(t, f.e, GCOptions{Progress: func(p GCProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		last = p
	}})
	want := []string{"listing", "records", "marking", "markers", "sweeping", "done"}
	if !slices.Equal(phases, want) {
		t.Fatalf("phases %q, want %q", phases, want)
	}
	if last.Deleted != rep.Deleted || last.Bytes != rep.Bytes || last.Listed != rep.Listed || rep.Deleted == 0 ||
		last.Reachable != rep.Reachable || last.Volumes != rep.Volumes {
		t.Fatalf("last progress %+v, report %+v", last, rep)
	}
}

// TestGCCollectsNewestEpochOfIdleName: objects of the newest epoch a
// name's record handed out are protected only while the name is locked
// (an operation may be writing them before its header names them). A
// volume renamed away leaves its old name idle: once those objects are
// unreachable (a snapshot that shared them removed) they are collected,
// not kept for ever.
func TestGCCollectsNewestEpochOfIdleName(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("a", 8)
	f.write("a", 0, 4, 'a')
	f.rename("a", "b")
	f.snapshot("b", "s")
	f.write("b", 0, 4, 'b')
	f.remove("s")
	rec, err := v.e.readEpoch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	garbage := gcGarbage(t, v.e)
	if len(garbage) != 5 || !strings.HasPrefix(garbage[0], DataObject("a", rec, 0)[:len("a")+17]) {
		t.Fatalf("the scenario left %q unreachable, want a's 4 data objects and page of epoch %d", garbage, rec)
	}
	rep := runGC(t, v.e, GCOptions{})
	if rep.Deleted != 5 || rep.Protected != 0 {
		t.Fatalf("report %+v, want the 5 objects of the idle name's newest epoch deleted", rep)
	}
	checkOracle(t, v.e, f.vols)
}

// TestGCOneStore: maps and data in one store (one directory): pages and
// data objects are both collected from it, nothing else.
func TestGCOneStore(t *testing.T) {
	st := newEnv(t, modelBS).maps
	e, err := New(st, st, Options{Owner: "host-a", BlockSize: modelBS})
	if err != nil {
		t.Fatal(err)
	}
	f := &gcFixture{t: t, e: e, vols: map[string]*mvol{}}
	f.create("vm", 8)
	f.write("vm", 0, 4, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 0, 4, 'b')
	f.remove("s")
	garbage := gcGarbage(t, e)
	rep := runGC(t, e, GCOptions{})
	if len(garbage) != 5 || rep.Deleted != 5 || rep.DeletedData != 4 || rep.DeletedPages != 1 {
		t.Fatalf("garbage %q, report %+v: want 4 data objects and a page deleted", garbage, rep)
	}
	if g := gcGarbage(t, e); len(g) != 0 {
		t.Fatalf("left: %q", g)
	}
	checkOracle(t, e, f.vols)
}
