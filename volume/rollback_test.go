package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// rollbackWorld: vol (300 blocks) written in three states, s0 s1 s2
// taken after each, then written again and grown; clone c of s1 with a
// block of its own, and its snapshot cs.
func rollbackWorld(t *testing.T, v *env) map[string]*mvol {
	t.Helper()
	ctx := context.Background()
	e := v.e
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	vols := map[string]*mvol{}
	const size = 300 * modelBS
	must(e.Create(ctx, "vol", size))
	m := &mvol{size: size, blocks: map[uint64][]byte{}}
	write := func(name string, m *mvol, b uint64, c byte) {
		t.Helper()
		p := fill(c, modelBS)
		must(writeVol(ctx, e, v.dataStore(), name, b*modelBS, p))
		m.write(b*modelBS, p)
	}
	for i, snap := range []string{"s0", "s1", "s2"} {
		write("vol", m, uint64(i), byte('a'+i))
		write("vol", m, 280, byte('x'+i))
		must(e.Snapshot(ctx, "vol", snap))
		s := m.clone()
		s.snap = true
		vols[snap] = s
	}
	write("vol", m, 5, 'n')
	must(e.Resize(ctx, "vol", 700*modelBS, false))
	m.resize(700 * modelBS)
	write("vol", m, 699, 'g')
	vols["vol"] = m
	must(e.Clone(ctx, "s1", "c", 0))
	c := vols["s1"].clone()
	c.snap = false
	write("c", c, 1, 'C')
	vols["c"] = c
	must(e.Snapshot(ctx, "c", "cs"))
	cs := c.clone()
	cs.snap = true
	vols["cs"] = cs
	return vols
}

func TestRollback(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	vols := rollbackWorld(t, v)
	owned := func(name string) int {
		n := 0
		for _, o := range reachedOf(t, v.e, name) {
			if o {
				n++
			}
		}
		return n
	}
	before := owned("vol")
	if before == 0 {
		t.Fatal("setup: vol owns nothing")
	}
	idBefore := mustInfoID(t, v.e, "vol")
	for _, c := range []struct{ vol, snap string }{
		{"vol", "s1"}, // back
		{"vol", "s2"}, // and forward again: s2 is still vol's
		{"vol", "s0"},
		{"c", "s1"},  // a clone to its parent
		{"c", "cs"},  // to its own snapshot
		{"c", "s0"},  // to a snapshot of its parent's origin taken before its parent
		{"c", "cs"},  // cs is still c's after that
		{"vol", "s2"}, // the others are untouched
	} {
		if err := v.e.Rollback(ctx, c.vol, c.snap); err != nil {
			t.Fatalf("rollback %s to %s: %v", c.vol, c.snap, err)
		}
		want := vols[c.snap].clone()
		want.snap = false
		vols[c.vol] = want
		for name, m := range vols {
			checkContent(t, v, name, m)
		}
		checkInvariants(t, v)
	}
	if owned("vol") != 0 {
		t.Fatalf("vol owns %d objects right after a rollback", owned("vol"))
	}
	if mustInfoID(t, v.e, "vol") == idBefore {
		t.Fatal("rollback kept the incarnation id")
	}
	// What vol owned before the first rollback was deleted: no object of
	// vol's map before is left that no map reaches.
	reachable := map[string]bool{}
	for name := range vols {
		for o := range reachedOf(t, v.e, name) {
			reachable[o] = true
		}
	}
	var orphans []string
	_ = v.data.List(ctx, "vol_", func(n string) error {
		if !reachable[n] {
			orphans = append(orphans, n)
		}
		return nil
	})
	if len(orphans) > 0 {
		t.Fatalf("objects of vol left after rollbacks: %v", orphans)
	}
	// The rolled back volume is written as any other; its snapshot is not.
	p := fill('Q', modelBS)
	if err := writeVol(ctx, v.e, v.dataStore(), "vol", 2*modelBS, p); err != nil {
		t.Fatal(err)
	}
	vols["vol"].write(2*modelBS, p)
	for name, m := range vols {
		checkContent(t, v, name, m)
	}
	// c was rolled back to s0 (not its parent s1): it is s0's clone now.
	if in, _ := v.e.Info(ctx, "c"); in.Parent != "s0" {
		t.Fatalf("c's parent after rollback to s0: %q", in.Parent)
	}
	// A renamed volume keeps its history.
	if err := v.e.Rename(ctx, "vol", "vol2"); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Rollback(ctx, "vol2", "s1"); err != nil {
		t.Fatalf("rollback of a renamed volume: %v", err)
	}
	checkContent(t, v, "vol2", vols["s1"])
	checkInvariants(t, v)
}

func mustInfoID(t *testing.T, e *Engine, name string) [16]byte {
	t.Helper()
	h, err := e.readHeader(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return h.id
}

func TestRollbackRefused(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	vols := rollbackWorld(t, v)
	if err := v.e.Create(ctx, "other", modelBS*10); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Snapshot(ctx, "other", "os"); err != nil {
		t.Fatal(err)
	}
	refused := func(vol, snap string, want error, words ...string) {
		t.Helper()
		err := v.e.Rollback(ctx, vol, snap)
		if !errors.Is(err, want) {
			t.Fatalf("rollback %s to %s: %v, want %v", vol, snap, err, want)
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("rollback %s to %s: %q does not say %q", vol, snap, err, w)
			}
		}
		for name, m := range vols {
			checkContent(t, v, name, m)
		}
	}
	// Not of its history.
	refused("vol", "os", errs.ErrInvalid, `"os"`, `"other"`, "history")
	refused("c", "s2", errs.ErrInvalid, `"s2"`, "history") // taken of c's origin after c's parent
	refused("vol", "cs", errs.ErrInvalid)                   // a snapshot of vol's clone
	refused("s1", "s0", errs.ErrInvalid, "is a snapshot")
	refused("vol", "c", errs.ErrInvalid, "not a snapshot")
	refused("vol", "nope", errs.ErrNotFound)
	// In use on this host.
	key := SessionKey{Port: 1, PID: 2, Handle: 3}
	openSession(t, v.e, "vol", key, false)
	refused("vol", "s1", errs.ErrBusy, `"vol"`, "1 connection")
	if err := v.e.CloseSession(ctx, "vol", key); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Open(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	refused("vol", "s1", errs.ErrBusy, `"vol"`, "open")
	if err := v.e.Close(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	// Locked by another host: its lock is what protects its writers.
	b := engineAs(t, v, "host-b")
	if err := b.Lock(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	refused("vol", "s1", errs.ErrLocked, `"vol"`, "host-b")
	// A snapshot locked by another host cannot be removed under us, nor
	// rolled back to meanwhile.
	if err := b.Unlock(ctx, "vol", false); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	refused("vol", "s1", errs.ErrLocked, `"s1"`, "host-b")
	if err := b.Unlock(ctx, "s1", false); err != nil {
		t.Fatal(err)
	}
	// Then it goes.
	if err := v.e.Rollback(ctx, "vol", "s1"); err != nil {
		t.Fatal(err)
	}
	if owner := lockOwner(t, v.e, "vol"); owner != "" {
		t.Fatalf("lock held by %q after rollback", owner)
	}
	checkContent(t, v, "vol", &mvol{size: vols["s1"].size, blocks: vols["s1"].blocks})
}

// TestRollbackCrash crashes (and fails) rollback at every mutating store
// call: afterwards the volume reads all as before or all as the snapshot,
// never a mix, the maps are consistent, and the rollback can be redone.
func TestRollbackCrash(t *testing.T) {
	ctx := context.Background()
	w := func() *env {
		v := newEnv(t, modelBS)
		return v
	}
	base := w()
	vols := rollbackWorld(t, base)
	if err := base.maps.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := base.data.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := func() *env {
		v := &env{maps: base.maps.Crash(), data: base.data.Crash(), owner: "host-a", bs: modelBS}
		v.restart(t)
		return v
	}
	v := fresh()
	start := v.plan.Index()
	if err := v.e.Rollback(ctx, "vol", "s1"); err != nil {
		t.Fatal(err)
	}
	n := v.plan.Index() - start
	t.Logf("rollback: %d mutating store calls", n)
	oldC, newC := vols["vol"], vols["s1"]
	for i := range n + 1 {
		for _, mode := range []string{"fail", "fail-after", "crash", "torn"} {
			desc := fmt.Sprintf("%s at call %d", mode, i)
			v := fresh()
			switch mode {
			case "fail":
				v.plan.Arm(v.plan.Index()+i, faultstore.Fail)
			case "fail-after":
				v.plan.Arm(v.plan.Index()+i, faultstore.FailAfter)
			default:
				v.plan.Torn = mode == "torn"
				v.plan.Arm(v.plan.Index()+i, faultstore.Crash)
			}
			err := v.e.Rollback(ctx, "vol", "s1")
			if v.plan.Crashed() {
				v.crash(t)
			} else {
				v.plan.Disarm()
			}
			in, ierr := v.e.Info(ctx, "vol")
			if ierr != nil {
				t.Fatalf("%s (rollback: %v): %v", desc, err, ierr)
			}
			got, rerr := readVol(ctx, v.e, v.dataStore(), "vol", 0, in.Size)
			if rerr != nil {
				t.Fatalf("%s (rollback: %v): read: %v", desc, err, rerr)
			}
			switch {
			case in.Size == oldC.size && string(got) == string(oldC.read(0, oldC.size)):
			case in.Size == newC.size && string(got) == string(newC.read(0, newC.size)):
			default:
				t.Fatalf("%s (rollback: %v): vol is neither as before nor as s1: %s", desc, err, runs(got))
			}
			for _, name := range []string{"s0", "s1", "s2", "c", "cs"} {
				checkContent(t, v, name, vols[name])
			}
			checkInvariants(t, v)
			// It can be done (again).
			if err := v.e.Rollback(ctx, "vol", "s1"); err != nil {
				t.Fatalf("%s: rollback again: %v", desc, err)
			}
			checkContent(t, v, "vol", &mvol{size: newC.size, blocks: newC.blocks})
		}
	}
}
