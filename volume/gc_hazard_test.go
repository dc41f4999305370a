package volume

import (
	"context"
	"syscall"
	"testing"

	"github.com/archipelago-go/archipelago/store/faultstore"
)

// The hazards of a naive mark-and-sweep (docs/gc.md), each in a
// deterministic interleaving: the collector runs at the worst moment of
// an operation (engine hook), or an operation runs at the worst moment of
// the collector (GCOptions.hook). Each test fails when the protection it
// names is taken out.

// twoSessions writes blocks [0, n) of vm with c in one session and then
// block 31 in the next (Close gives the lock back; the next write takes
// it and starts a new session): the first blocks' objects are then of an
// epoch below the record and not the allocation identity, so that only a
// walk that reaches them keeps them.
func twoSessions(t *testing.T, f *gcFixture, n uint64, c byte) {
	t.Helper()
	f.create("vm", 32)
	f.write("vm", 0, n, c)
	if err := f.e.Close(context.Background(), "vm"); err != nil {
		t.Fatal(err)
	}
	f.write("vm", 31, 32, 'z')
}

// Hazard 1, a write: its copy-on-write copy is made before the
// collector's listing and linked after its sweep. Kept by the epoch
// record and the allocation identity (either suffices here: take both
// out of gcRun.protected and the write loses the block's old bytes).
func TestGCHazardCopyInFlight(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 8)
	f.write("vm", 1, 2, 'a')
	f.snapshot("vm", "s")
	var rep *GCReport
	v.e.hook = func(point, name string) {
		if point == "copied" && rep == nil {
			rep = runGC(t, v.e, GCOptions{})
		}
	}
	if err := writeVol(ctx, v.e, v.e.data, "vm", modelBS, []byte("b")); err != nil {
		t.Fatal(err)
	}
	f.vols["vm"].write(modelBS, []byte("b"))
	checkOracle(t, v.e, f.vols)
	if rep == nil || rep.Protected == 0 {
		t.Fatalf("gc during the copy-on-write: report %+v, want the copy protected", rep)
	}
}

// Hazard 1, create/clone: a clone larger than its parent writes fresh
// root pages before its header. Kept by the epoch record (the clone's
// header does not exist yet: no allocation identity names it).
func TestGCHazardClonePagesInFlight(t *testing.T) {
	v, f := newGCFixture(t)
	f.create("vm", 16)
	f.write("vm", 0, 4, 'a')
	f.snapshot("vm", "s")
	var rep *GCReport
	v.e.hook = func(point, name string) {
		if point == "pages" && name == "c" {
			rep = runGC(t, v.e, GCOptions{})
		}
	}
	if err := v.e.Clone(context.Background(), "s", "c", 600*modelBS); err != nil {
		t.Fatal(err)
	}
	c := f.vols["s"].clone()
	c.snap, c.size = false, 600*modelBS
	f.vols["c"] = c
	checkOracle(t, v.e, f.vols)
	if rep == nil || rep.Protected != 1 {
		t.Fatalf("gc during the clone: report %+v, want its fresh root page protected", rep)
	}
	f.write("c", 590, 591, 'c')
	checkOracle(t, v.e, f.vols)
}

// Hazard 1, the allocation identity alone: a session's header update
// fails after its epoch record was bumped, so the record is above the
// identity the volume still has; a write whose copy was made under that
// identity links it after the collector's sweep. Kept by the identity
// only (take it out of gcRun.protected and the block loses its bytes).
func TestGCHazardIdentityBelowRecord(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 32)
	f.write("vm", 1, 2, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 5, 6, 'o') // owned: the trim below drops it
	var rep *GCReport
	v.e.hook = func(point, name string) {
		if point != "copied" || rep != nil {
			return
		}
		rep = &GCReport{}
		// A trim ends the session; the next write's session bumps the
		// record but fails to write the header.
		if err := v.e.Trim(ctx, "vm", 5*modelBS, modelBS); err != nil {
			t.Error(err)
		}
		f.vols["vm"].trim(5, 6)
		flt := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpWrite, Object: faultstore.Named("vm"), Errno: syscall.EIO, Times: 1})
		if err := writeVol(ctx, v.e, v.e.data, "vm", 6*modelBS, []byte("x")); err == nil {
			t.Error("the write whose session could not write the header succeeded")
		}
		flt.Remove()
		rep = runGC(t, v.e, GCOptions{})
	}
	if err := writeVol(ctx, v.e, v.e.data, "vm", modelBS, []byte("b")); err != nil {
		t.Fatal(err)
	}
	f.vols["vm"].write(modelBS, []byte("b"))
	checkOracle(t, v.e, f.vols)
	if rep == nil || rep.Protected == 0 {
		t.Fatalf("report %+v, want the copy protected", rep)
	}
}

// Hazard 1 and the engine change it needs: a write copies under the
// allocation identity E; meanwhile a trim ends the session and another
// write moves the volume to E+1; the collector runs (E is neither the
// record nor an identity: its objects are garbage). The first write must
// not link its copy of E: it copies again under E+1 (remove the identity
// check from makeWritableOnce and the block loses its old bytes).
func TestGCHazardCopyUnderMovedIdentity(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 32)
	f.write("vm", 1, 2, 'a')
	f.snapshot("vm", "s")
	f.write("vm", 5, 6, 'o')
	var rep *GCReport
	v.e.hook = func(point, name string) {
		if point != "copied" || rep != nil {
			return
		}
		rep = &GCReport{}
		if err := v.e.Trim(ctx, "vm", 5*modelBS, modelBS); err != nil {
			t.Error(err)
		}
		f.vols["vm"].trim(5, 6)
		f.write("vm", 6, 7, 'x') // a new session
		rep = runGC(t, v.e, GCOptions{})
	}
	if err := writeVol(ctx, v.e, v.e.data, "vm", modelBS, []byte("b")); err != nil {
		t.Fatal(err)
	}
	f.vols["vm"].write(modelBS, []byte("b"))
	checkOracle(t, v.e, f.vols)
	if rep == nil || rep.DeletedData == 0 {
		t.Fatalf("report %+v: the first copy (of a moved identity) should have been collected", rep)
	}
}

// Hazard 2, snapshot: taken between the collector's listing of volumes
// and its walk, after which the volume copies away from the objects it
// shares with the snapshot. Kept by the snapshot's root marker (remove
// markRoot from snapshot and the snapshot loses its blocks).
func TestGCHazardSnapshotDuringMark(t *testing.T) {
	v, f := newGCFixture(t)
	twoSessions(t, f, 4, 'a')
	rep := runGC(t, v.e, GCOptions{hook: func(step string) {
		if step == "volumes" {
			f.snapshot("vm", "s")
			f.write("vm", 0, 4, 'b')
		}
	}})
	checkOracle(t, v.e, f.vols)
	if rep.Markers == 0 {
		t.Fatalf("report %+v: no root marker processed", rep)
	}
}

// Hazard 2, clone: made of a snapshot during the walk, and the snapshot
// removed before the walk reaches it. Kept by the clone's root marker.
func TestGCHazardCloneDuringMark(t *testing.T) {
	v, f := newGCFixture(t)
	twoSessions(t, f, 4, 'a')
	f.snapshot("vm", "s")
	f.remove("vm")
	rep := runGC(t, v.e, GCOptions{hook: func(step string) {
		if step == "volumes" {
			f.clone("s", "c")
			f.remove("s")
		}
	}})
	checkOracle(t, v.e, f.vols)
	if rep.Markers == 0 {
		t.Fatalf("report %+v: no root marker processed", rep)
	}
}

// Hazard 2, rename: the listing has the old name, the walk finds it gone,
// and the new name was not listed. Kept by the new name's root marker.
func TestGCHazardRenameDuringMark(t *testing.T) {
	v, f := newGCFixture(t)
	twoSessions(t, f, 4, 'a')
	rep := runGC(t, v.e, GCOptions{hook: func(step string) {
		if step == "volumes" {
			f.rename("vm", "a-new")
		}
	}})
	checkOracle(t, v.e, f.vols)
	if rep.Markers == 0 {
		t.Fatalf("report %+v: no root marker processed", rep)
	}
	f.write("a-new", 0, 1, 'c')
	checkOracle(t, v.e, f.vols)
}

// Hazard 2, chained: renamed during the listing of volumes and renamed
// again after the first listing of markers found the first rename's: the
// listings repeat until one finds no new marker (with one listing only,
// the volume's objects go).
func TestGCHazardRootsDuringMarkers(t *testing.T) {
	v, f := newGCFixture(t)
	twoSessions(t, f, 4, 'a')
	round := 0
	rep := runGC(t, v.e, GCOptions{hook: func(step string) {
		switch step {
		case "volumes":
			f.rename("vm", "b")
		case "markers":
			if round++; round == 1 {
				f.rename("b", "c")
			}
		}
	}})
	checkOracle(t, v.e, f.vols)
	if rep.Rounds != 3 || rep.Markers != 2 {
		t.Fatalf("report %+v, want 3 rounds and 2 markers", rep)
	}
}

// Step 6: a marker is deleted only while its name's lock is free; a
// rollback (the marker of an existing volume) or snapshot that took the
// lock after the marker was processed keeps it for the next collection.
// (The design's first rule, "the header exists without a rename flag",
// would have deleted the marker of an existing volume under a rollback.)
func TestGCHazardMarkerOfOperationInFlight(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 4)
	f.write("vm", 0, 1, 'a')
	if err := v.e.Close(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if err := v.e.markRoot(ctx, "vm"); err != nil { // a rollback earlier
		t.Fatal(err)
	}
	b := twoEngines(t, v, "host-b")
	rep := runGC(t, v.e, GCOptions{hook: func(step string) {
		if step == "swept" { // host-b starts a rollback of vm
			if err := b.locker.TryLock(ctx, lockName("vm"), "host-b"); err != nil {
				t.Error(err)
			}
			if err := b.markRoot(ctx, "vm"); err != nil {
				t.Error(err)
			}
		}
	}})
	if rep.Markers != 1 || rep.MarkersDeleted != 0 {
		t.Fatalf("report %+v: want the marker processed and kept", rep)
	}
	if _, err := v.maps.Stat(ctx, rootMarker("vm")); err != nil {
		t.Fatalf("the marker of a volume under an operation was deleted: %v", err)
	}
}

// Step 6, the race: another host starts an operation on the name (takes
// its lock, writes its marker: the old one is there, nothing to do)
// between the collector's look at the lock and its delete of the marker.
// The collector looks again after the delete and writes the marker back
// (without that look the operation runs with no marker, and the next
// collection may miss its root).
func TestGCHazardMarkerDeletedUnderStartingOperation(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	f.create("vm", 4)
	f.snapshot("vm", "s")
	b := twoEngines(t, v, "host-b")
	rep := runGC(t, v.e, GCOptions{hook: func(step string) {
		if step == "unmarking s" { // host-b starts a rollback of s... or any op naming s
			if err := b.locker.TryLock(ctx, lockName("s"), "host-b"); err != nil {
				t.Error(err)
			}
			if err := b.markRoot(ctx, "s"); err != nil {
				t.Error(err)
			}
		}
	}})
	if rep.Markers != 1 || rep.MarkersDeleted != 0 {
		t.Fatalf("report %+v: want the marker processed and not counted deleted", rep)
	}
	if _, err := v.maps.Stat(ctx, rootMarker("s")); err != nil {
		t.Fatalf("the marker of a name whose operation started during its delete is gone: %v", err)
	}
}

// A walk reads a header and then its pages: a page a session of the
// volume added after the header was read (a fresh leaf, linked into the
// owned root, which is read as it is now) looks shared to that header. It
// must not go into the engine's cache of shared pages: the session then
// changes it in place, and a later walk of a snapshot of the volume would
// take the stale copy and miss what was written into it since. So the
// collector's walks neither read nor fill that cache.
func TestGCHazardStaleSharedPage(t *testing.T) {
	v, f := newGCFixture(t)
	ctx := context.Background()
	b := twoEngines(t, v, "host-b") // writes vm; host-a only collects
	f.e = b
	f.create("vm", 600)
	f.write("vm", 0, 1, 'a')
	if err := b.Close(ctx, "vm"); err != nil { // the next write starts a session
		t.Fatal(err)
	}
	runGC(t, v.e, GCOptions{hook: func(step string) {
		if step == "walking vm" {
			f.write("vm", 300, 301, 'b') // a fresh leaf (1) in the new session's epoch
		}
	}})
	f.write("vm", 301, 302, 'c') // into that leaf, in place
	f.snapshot("vm", "s")
	f.write("vm", 301, 302, 'd') // vm copies away: only s reaches 'c'
	runGC(t, v.e, GCOptions{})
	fresh := twoEngines(t, v, "host-c") // a cold cache
	checkOracle(t, fresh, f.vols)
}
