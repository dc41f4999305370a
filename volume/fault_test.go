package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// TestFaults injects a fault at every mutating store call of an operation
// in turn (failing it, failing it after it was done, crashing before it,
// crashing with a torn FUA write) and checks that afterwards every volume
// reads as before the operation or as after it, block by block, that no
// object is both owned and shared, and that the engine recovers: the
// operation can be redone and the volumes written again.

// faultWorld is the state every case starts from:
//
//	base-vol   1 GiB; blocks 0, 1, 300, 70000 written, then snapshotted
//	base-snap  its snapshot
//	base-clone a clone of base-snap; block 1 rewritten
type faultWorld struct {
	maps, data *memstore.Store
	vols       map[string]*mvol
}

func fill(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

func newFaultWorld(t *testing.T) *faultWorld {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	e := v.e
	vols := map[string]*mvol{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Create(ctx, "base-vol", 1<<30))
	base := &mvol{size: 1 << 30, blocks: map[uint64][]byte{}}
	for i, b := range []uint64{0, 1, 300, 70000} {
		p := fill(byte('a'+i), modelBS)
		must(writeVol(ctx, e, v.dataStore(), "base-vol", b*modelBS, p))
		base.write(b*modelBS, p)
	}
	vols["base-vol"] = base
	must(e.Snapshot(ctx, "base-vol", "base-snap"))
	snap := base.clone()
	snap.snap = true
	vols["base-snap"] = snap
	must(e.Clone(ctx, "base-snap", "base-clone", 0))
	clone := base.clone()
	p := fill('k', modelBS)
	must(writeVol(ctx, e, v.dataStore(), "base-clone", modelBS, p))
	clone.write(modelBS, p)
	vols["base-clone"] = clone
	must(v.maps.Sync(ctx))
	must(v.data.Sync(ctx))
	return &faultWorld{maps: v.maps, data: v.data, vols: vols}
}

// env returns a fresh engine over a copy of the world.
func (w *faultWorld) env(t *testing.T) *env {
	v := &env{maps: w.maps.Crash(), data: w.data.Crash(), owner: "host-a", bs: modelBS}
	v.restart(t)
	return v
}

func cloneVols(m map[string]*mvol) map[string]*mvol {
	c := make(map[string]*mvol)
	for k, v := range m {
		c[k] = v.clone()
	}
	return c
}

type faultCase struct {
	name string
	op   func(ctx context.Context, v *env) error
	// after changes the oracle as a successful op does.
	after func(vols map[string]*mvol)
	// check, if set, checks more after a fault.
	check func(t *testing.T, v *env, desc string)
	write bool // a data write: sectors may tear
}

func writeCase(name, vol string, off uint64, p []byte) faultCase {
	return faultCase{
		name: name,
		op: func(ctx context.Context, v *env) error {
			return writeVol(ctx, v.e, v.dataStore(), vol, off, p)
		},
		after: func(vols map[string]*mvol) { vols[vol].write(off, p) },
		write: true,
	}
}

func faultCases() []faultCase {
	return []faultCase{
		writeCase("cow-clone", "base-clone", 300*modelBS, fill('N', modelBS)),
		writeCase("cow-origin", "base-vol", 512, fill('O', 1024)),
		writeCase("zero-block", "base-clone", 5000*modelBS, fill('Z', modelBS)),
		writeCase("two-blocks", "base-clone", 70000*modelBS-100, fill('T', 200)),
		{
			name: "snapshot",
			op:   func(ctx context.Context, v *env) error { return v.e.Snapshot(ctx, "base-vol", "snap-two") },
			after: func(vols map[string]*mvol) {
				s := vols["base-vol"].clone()
				s.snap = true
				vols["snap-two"] = s
			},
		},
		{
			name:  "clone",
			op:    func(ctx context.Context, v *env) error { return v.e.Clone(ctx, "base-snap", "clone-two", 0) },
			after: func(vols map[string]*mvol) { c := vols["base-snap"].clone(); c.snap = false; vols["clone-two"] = c },
		},
		{
			name: "clone-larger",
			op:   func(ctx context.Context, v *env) error { return v.e.Clone(ctx, "base-snap", "clone-big", 1<<40) },
			after: func(vols map[string]*mvol) {
				c := vols["base-snap"].clone()
				c.snap, c.size = false, 1<<40
				vols["clone-big"] = c
			},
		},
		{
			name:  "create",
			op:    func(ctx context.Context, v *env) error { return v.e.Create(ctx, "new-volume", 1<<30) },
			after: func(vols map[string]*mvol) { vols["new-volume"] = &mvol{size: 1 << 30, blocks: map[uint64][]byte{}} },
		},
		{
			name:  "remove",
			op:    func(ctx context.Context, v *env) error { return v.e.Remove(ctx, "base-clone") },
			after: func(vols map[string]*mvol) { delete(vols, "base-clone") },
		},
		{
			name: "rename",
			op:   func(ctx context.Context, v *env) error { return v.e.Rename(ctx, "base-clone", "clone-renamed") },
			after: func(vols map[string]*mvol) {
				vols["clone-renamed"] = vols["base-clone"]
				delete(vols, "base-clone")
			},
			check: func(t *testing.T, v *env, desc string) {
				_, e1 := v.e.Info(context.Background(), "base-clone")
				_, e2 := v.e.Info(context.Background(), "clone-renamed")
				if (e1 == nil) == (e2 == nil) {
					t.Fatalf("%s: old %v, new %v: want exactly one", desc, e1, e2)
				}
			},
		},
		{
			name:  "grow",
			op:    func(ctx context.Context, v *env) error { return v.e.Resize(ctx, "base-vol", 1<<40, false) },
			after: func(vols map[string]*mvol) { vols["base-vol"].resize(1 << 40) },
		},
		{
			name:  "shrink",
			op:    func(ctx context.Context, v *env) error { return v.e.Resize(ctx, "base-vol", 300*modelBS+1000, true) },
			after: func(vols map[string]*mvol) { vols["base-vol"].resize(300*modelBS + 1000) },
		},
		{
			name:  "trim",
			op:    func(ctx context.Context, v *env) error { return v.e.Trim(ctx, "base-clone", 0, 400*modelBS) },
			after: func(vols map[string]*mvol) { vols["base-clone"].trim(0, 400) },
		},
	}
}

func TestFaults(t *testing.T) {
	w := newFaultWorld(t)
	for _, c := range faultCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			after := cloneVols(w.vols)
			c.after(after)
			// Count the mutating calls of the operation.
			v := w.env(t)
			start := v.plan.Index()
			if err := c.op(ctx, v); err != nil {
				t.Fatalf("without faults: %v", err)
			}
			n := v.plan.Index() - start
			checkWorld(t, v, w.vols, after, c.check, "no fault", false)
			checkWorld(t, restarted(t, v), after, after, nil, "no fault, restarted", false)
			t.Logf("%d mutating store calls", n)
			for i := range n + 1 {
				for _, mode := range []string{"fail", "fail-after", "crash", "torn"} {
					desc := fmt.Sprintf("%s at call %d", mode, i)
					v := w.env(t)
					switch mode {
					case "fail":
						v.plan.Arm(v.plan.Index()+i, faultstore.Fail)
					case "fail-after":
						v.plan.Arm(v.plan.Index()+i, faultstore.FailAfter)
					default:
						v.plan.Torn = mode == "torn"
						v.plan.Arm(v.plan.Index()+i, faultstore.Crash)
					}
					err := c.op(ctx, v)
					if v.plan.Crashed() {
						v.crash(t)
					} else {
						v.plan.Disarm()
					}
					_ = err // either outcome is checked below
					checkWorld(t, v, w.vols, after, c.check, desc, c.write)
					recoverWorld(t, v, c, desc)
				}
			}
		})
	}
}

func restarted(t *testing.T, v *env) *env {
	v.restart(t)
	return v
}

// checkWorld checks that every volume is as before or as after, block by
// block, and that the maps are consistent.
func checkWorld(t *testing.T, v *env, before, after map[string]*mvol, check func(*testing.T, *env, string), desc string, sectors bool) {
	t.Helper()
	ctx := context.Background()
	var names []string
	if err := v.e.List(ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatalf("%s: list: %v", desc, err)
	}
	all := slices.Sorted(maps.Keys(mergeKeys(before, after)))
	for _, name := range all {
		b, a := before[name], after[name]
		in, err := v.e.Info(ctx, name)
		if errors.Is(err, errs.ErrNotFound) {
			if b != nil && a != nil {
				t.Fatalf("%s: volume %s vanished", desc, name)
			}
			if slices.Contains(names, name) {
				t.Fatalf("%s: %s listed but not found", desc, name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: info %s: %v", desc, name, err)
		}
		if !slices.Contains(names, name) {
			t.Fatalf("%s: %s exists but is not listed", desc, name)
		}
		var cands []*mvol
		sizeOK := false
		for _, m := range []*mvol{b, a} {
			if m != nil {
				cands = append(cands, m)
				sizeOK = sizeOK || m.size == in.Size
			}
		}
		if !sizeOK {
			t.Fatalf("%s: volume %s has size %d", desc, name, in.Size)
		}
		blocks := map[uint64]bool{}
		for _, m := range cands {
			for b := range m.blocks {
				blocks[b] = true
			}
		}
		ext, err := v.e.Allocated(ctx, name, 0, in.Size)
		if err != nil {
			t.Fatalf("%s: allocated %s: %v", desc, name, err)
		}
		for _, x := range ext {
			for b := x.Offset / modelBS; b*modelBS < x.Offset+x.Size; b++ {
				blocks[b] = true
			}
		}
		for _, blk := range slices.Sorted(maps.Keys(blocks)) {
			off := blk * modelBS
			if off >= in.Size {
				continue
			}
			n := min(modelBS, in.Size-off)
			got, err := readVol(ctx, v.e, v.dataStore(), name, off, n)
			if err != nil {
				t.Fatalf("%s: read %s block %d: %v", desc, name, blk, err)
			}
			// Whole blocks must be as before or as after; an interrupted
			// data write may leave each 512-byte sector either way.
			unit := n
			if sectors {
				unit = 512
			}
			for u := uint64(0); u < n; u += unit {
				ok := false
				for _, m := range cands {
					ok = ok || bytes.Equal(got[u:min(u+unit, n)], m.read(off+u, min(unit, n-u)))
				}
				if !ok {
					t.Fatalf("%s: volume %s block %d reads %s: neither before nor after", desc, name, blk, runs(got))
				}
			}
		}
	}
	if check != nil {
		check(t, v, desc)
	}
	checkInvariants(t, v)
}

func mergeKeys(a, b map[string]*mvol) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// recoverWorld takes what the engine shows as the truth, writes to every
// writable volume, snapshots base-vol, crashes, and checks that all of it
// survived.
func recoverWorld(t *testing.T, v *env, c faultCase, desc string) {
	t.Helper()
	ctx := context.Background()
	// Settle the oracle on what the engine shows (checkWorld allowed
	// either state per block).
	var names []string
	_ = v.e.List(ctx, func(n string) error { names = append(names, n); return nil })
	state := map[string]*mvol{}
	for _, n := range names {
		in, err := v.e.Info(ctx, n)
		if err != nil {
			t.Fatalf("%s: recover: info %s: %v", desc, n, err)
		}
		m := &mvol{size: in.Size, snap: in.ReadOnly, blocks: map[uint64][]byte{}}
		ext, _ := v.e.Allocated(ctx, n, 0, in.Size)
		for _, x := range ext {
			for b := x.Offset / modelBS; b*modelBS < x.Offset+x.Size; b++ {
				got, err := readVol(ctx, v.e, v.dataStore(), n, b*modelBS, min(modelBS, in.Size-b*modelBS))
				if err != nil {
					t.Fatalf("%s: recover: %v", desc, err)
				}
				blk := make([]byte, modelBS)
				copy(blk, got)
				if !isZero(blk) {
					m.blocks[b] = blk
				}
			}
		}
		state[n] = m
	}
	// Write to every writable volume: block 0, 300 and a fresh one.
	for _, n := range names {
		m := state[n]
		if m.snap {
			continue
		}
		for _, b := range []uint64{0, 300, 4242} {
			if (b+1)*modelBS > m.size {
				continue
			}
			p := fill('R', 100)
			if err := writeVol(ctx, v.e, v.dataStore(), n, b*modelBS+7, p); err != nil {
				t.Fatalf("%s: recover: write %s: %v", desc, n, err)
			}
			m.write(b*modelBS+7, p)
		}
	}
	// A snapshot and a clone still work.
	if state["base-vol"] != nil {
		if err := v.e.Snapshot(ctx, "base-vol", "recover-snap"); err != nil {
			t.Fatalf("%s: recover: snapshot: %v", desc, err)
		}
		s := state["base-vol"].clone()
		s.snap = true
		state["recover-snap"] = s
	}
	v.crash(t)
	checkWorld(t, v, state, state, nil, desc+", recovered", false)
}
