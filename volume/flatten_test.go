package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// flattenWorld: base (600 blocks of 4 KiB: a tree of height 2) with data
// in leaf pages 0 and 2, and a leaf page 1 whose only blocks were trimmed
// (a page of zero entries); snapshot snap; clone (larger: a root page of
// its own above snap's root) with a few blocks rewritten.
func flattenWorld(t *testing.T, v *env) (base, clone *mvol) {
	t.Helper()
	ctx := context.Background()
	e := v.e
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const size = 600 * modelBS
	must(e.Create(ctx, "base", size))
	base = &mvol{size: size, blocks: map[uint64][]byte{}}
	for _, b := range []uint64{0, 1, 7, 100, 255, 300, 301, 520, 599} {
		p := fill(byte('a'+b%26), modelBS)
		must(writeVol(ctx, e, v.dataStore(), "base", b*modelBS, p))
		base.write(b*modelBS, p)
	}
	must(e.Trim(ctx, "base", 300*modelBS, 2*modelBS))
	base.trim(300, 302)
	must(e.Snapshot(ctx, "base", "snap"))
	must(e.Clone(ctx, "snap", "clone", 70000*modelBS))
	clone = base.clone()
	clone.size = 70000 * modelBS
	for _, b := range []uint64{1, 520, 69000} {
		p := fill('K', modelBS)
		must(writeVol(ctx, e, v.dataStore(), "clone", b*modelBS, p))
		clone.write(b*modelBS, p)
	}
	return base, clone
}

// checkContent compares volume name with the oracle: the size, and the
// windows of 64 blocks that hold the oracle's blocks, the first and the
// last (a large volume's long zero stretches are not all read).
func checkContent(t *testing.T, v *env, name string, want *mvol) {
	t.Helper()
	in, err := v.e.Info(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if in.Size != want.size {
		t.Fatalf("%s: size %d, want %d", name, in.Size, want.size)
	}
	const win = 64 * modelBS
	wins := map[uint64]bool{0: true, (want.size - 1) / win: true}
	for b := range want.blocks {
		wins[b*modelBS/win] = true
	}
	for w := range wins {
		off := w * win
		n := min(win, want.size-off)
		got, err := readVol(context.Background(), v.e, v.dataStore(), name, off, n)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if exp := want.read(off, n); !bytes.Equal(got, exp) {
			t.Fatalf("%s: content at %d\n got %s\nwant %s", name, off, runs(got), runs(exp))
		}
	}
}

// reachedOf lists what volume name's map reaches, by object name, with
// whether it owns it.
func reachedOf(t *testing.T, e *Engine, name string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	h, err := e.readHeader(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	if err := e.reach(ctx, name, h, func(o reached) error { out[o.name] = o.owned; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// flattenAll drives a flatten as the client does: ranges, then done.
func flattenAll(ctx context.Context, e *Engine, name string, size, step uint64) (uint64, error) {
	var copied uint64
	for off := uint64(0); off < size; off += step {
		n, err := e.Flatten(ctx, name, off, min(step, size-off))
		copied += n
		if err != nil {
			return copied, err
		}
	}
	return copied, e.FlattenDone(ctx, name)
}

// TestFlattenDuringWrites flattens clones while writers rewrite their
// blocks (shared and own, the very blocks the flatten copies), checks the
// content against the oracle, then removes the parent snapshot and its
// volume and deletes every object named after the parent (what a
// collection frees): the clones read the same, and their maps reach only
// objects they own.
func TestFlattenDuringWrites(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	base, first := flattenWorld(t, v)
	h, err := v.e.readHeader(ctx, "clone")
	if err != nil {
		t.Fatal(err)
	}
	zeroLeaf := false
	_ = v.e.reach(ctx, "clone", h, func(o reached) error {
		zeroLeaf = zeroLeaf || (o.page && o.key == pageKey{0, 1} && !o.owned)
		return nil
	})
	if !zeroLeaf {
		t.Fatal("setup: the clone does not reach base's trimmed leaf page")
	}
	// Slow copies: a write's copy-on-write and the flatten's copy of one
	// block overlap in time, so that a flatten that did not wait for the
	// write's copy (v.inflight) would copy the parent's block over the
	// written one after the write.
	v.plan.Inject(faultstore.Rule{Ops: faultstore.OpCopy, Delay: 2 * time.Millisecond})
	clones := map[string]*mvol{"clone": first}
	for round := range 8 {
		name := "clone"
		if round > 0 {
			name = fmt.Sprintf("clone%d", round)
			if err := v.e.Clone(ctx, "snap", name, 0); err != nil {
				t.Fatal(err)
			}
			clones[name] = base.clone()
		}
		clone := clones[name]
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				hot := []uint64{0, 7, 0, 7, 100, 255, 599, 3}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					b := hot[rng.IntN(len(hot))]
					off := b*modelBS + uint64(rng.IntN(modelBS/512))*512
					p := fill(byte('A'+i%26), 512)
					mu.Lock() // the oracle's order is the writes' order
					err := writeVol(ctx, v.e, v.dataStore(), name, off, p)
					if err == nil {
						clone.write(off, p)
					}
					mu.Unlock()
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		copied, err := flattenAll(ctx, v.e, name, clone.size, 8*modelBS)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: flatten copied %d bytes", name, copied)
		checkContent(t, v, name, clone)
		info, err := v.e.Info(ctx, name)
		if err != nil || info.Parent != "" {
			t.Fatalf("%s after flatten: parent %q, err %v; want none", name, info.Parent, err)
		}
		for obj, owned := range reachedOf(t, v.e, name) {
			if !owned || !strings.HasPrefix(obj, name+"_") {
				t.Errorf("after flatten %s reaches %s (owned %v)", name, obj, owned)
			}
		}
	}
	checkContent(t, v, "snap", base)
	checkInvariants(t, v)
	// The parent goes, and everything named after it with it.
	if err := v.e.Remove(ctx, "snap"); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Remove(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	// A collection frees everything named after the parent: no clone
	// reaches any of it.
	rep, err := v.e.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted == 0 {
		t.Fatal("gc deleted nothing of the parent")
	}
	for _, st := range []interface {
		List(context.Context, string, func(string) error) error
	}{v.maps, v.data} {
		_ = st.List(ctx, "base_", func(n string) error {
			if _, ok := parseObjectName(n); ok {
				t.Errorf("%s of the parent left after gc", n)
			}
			return nil
		})
	}
	v.restart(t)
	for name, want := range clones {
		checkContent(t, v, name, want)
	}
	checkInvariants(t, v)
	// And it is a volume like any other.
	p := fill('Z', modelBS)
	if err := writeVol(ctx, v.e, v.dataStore(), "clone", 2*modelBS, p); err != nil {
		t.Fatal(err)
	}
	first.write(2*modelBS, p)
	checkContent(t, v, "clone", first)
}

// TestFlattenDoneRefusesShared: done before every block was copied is
// refused, naming a block, and changes nothing.
func TestFlattenDoneRefusesShared(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	_, clone := flattenWorld(t, v)
	if _, err := v.e.Flatten(ctx, "clone", 0, 100*modelBS); err != nil {
		t.Fatal(err)
	}
	err := v.e.FlattenDone(ctx, "clone")
	if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), "block 100 ") {
		t.Fatalf("done with block 100 shared: %v", err)
	}
	if info, _ := v.e.Info(ctx, "clone"); info.Parent != "snap" {
		t.Fatalf("parent %q after a refused done", info.Parent)
	}
	checkContent(t, v, "clone", clone)
	if _, err := v.e.Flatten(ctx, "snap", 0, modelBS); !errors.Is(err, errs.ErrInvalid) {
		t.Fatalf("flatten of a snapshot: %v", err)
	}
	if _, err := v.e.Flatten(ctx, "clone", clone.size, modelBS); !errors.Is(err, errs.ErrInvalid) {
		t.Fatalf("flatten past the end: %v", err)
	}
	// The lock taken for the flatten went back: another host may write.
	if owner := lockOwner(t, v.e, "clone"); owner != "" {
		t.Fatalf("lock held by %q after flatten", owner)
	}
}

// TestFlattenWaitsForWrite: a write is copying a shared block when the
// flatten comes to it. The flatten must wait for that copy (v.inflight)
// and then find the block owned; one that copied the parent's block again
// would land after the write's data and undo it. The copies are slowed
// down so that the write's is in progress when the flatten looks (the
// write's copy of the parent's block 0 takes 100 ms, a second copy of it
// 300 ms).
func TestFlattenWaitsForWrite(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	_, clone := flattenWorld(t, v)
	block0 := func(name string) bool {
		return strings.HasPrefix(name, "base_") && strings.HasSuffix(name, "_0000000000000000")
	}
	writeCopy := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpCopy, Object: block0, Times: 1, Delay: 100 * time.Millisecond})
	v.plan.Inject(faultstore.Rule{Ops: faultstore.OpCopy, Object: block0, Skip: 1, Times: 1, Delay: 300 * time.Millisecond})
	p := fill('W', modelBS)
	done := make(chan error, 1)
	go func() { done <- writeVol(ctx, v.e, v.dataStore(), "clone", 0, p) }()
	for writeCopy.Hits() == 0 {
		select {
		case err := <-done:
			t.Fatalf("the write ended before its copy: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := v.e.Flatten(ctx, "clone", 0, 8*modelBS); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	clone.write(0, p)
	checkContent(t, v, "clone", clone)
}
