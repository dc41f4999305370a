package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// The collector's randomized test: two hosts (two engines of different
// owners over one shared storage) run random volume operations — write,
// trim, snapshot, clone, rename, remove, resize, create, a forced unlock
// — one after the other, while each host runs collections over and over,
// some of them cancelled at a random step. After every step every live
// volume and snapshot is read whole, from a random host, and compared
// with the byte oracle. Once quiet (the collectors stopped, every lock
// given back), a last collection leaves no map page or data object that
// no header reaches, and no root marker.
//
// Replay a run with VOLUME_MODEL_SEED=<seed> (and VOLUME_MODEL_STEPS=<n>).

// memShared is one memory store pair shared by the hosts.
func memShared() sharedStores {
	maps, data := memstore.New(), memstore.New()
	return func(t *testing.T) (store.Store, store.Store, func()) { return maps, data, func() {} }
}

func TestGCModelTwoHosts(t *testing.T) {
	for _, c := range []struct {
		name  string
		seed  uint64
		steps int
		open  func(t *testing.T) sharedStores
	}{
		{"memstore", 31, 200, func(*testing.T) sharedStores { return memShared() }},
		{"filestore", 32, 60, fileShared},
	} {
		t.Run(c.name, func(t *testing.T) {
			seed := modelSeed(t, c.seed)
			t.Logf("seed %d (replay: VOLUME_MODEL_SEED=%d go test -run 'TestGCModelTwoHosts/%s' ./volume)", seed, seed, c.name)
			runGCModel(t, seed, modelSteps(c.steps), c.open(t))
		})
	}
}

type gcHost struct {
	name       string
	e          *Engine
	maps, data store.Store
}

type gcModel struct {
	t      *testing.T
	rng    *rand.Rand
	ctx    context.Context
	hosts  [2]*gcHost
	vols   map[string]*mvol
	seq    int
	logMu  sync.Mutex
	log    []string
	counts map[string]int
}

func (m *gcModel) logf(format string, args ...any) {
	m.logMu.Lock()
	m.log = append(m.log, fmt.Sprintf(format, args...))
	m.logMu.Unlock()
}

func runGCModel(t *testing.T, seed uint64, steps int, open sharedStores) {
	m := &gcModel{t: t, rng: rand.New(rand.NewPCG(seed, 0x6c)), ctx: context.Background(),
		vols: make(map[string]*mvol), counts: make(map[string]int)}
	defer func() {
		if t.Failed() {
			m.logMu.Lock()
			n := max(0, len(m.log)-80)
			if os.Getenv("VOLUME_MODEL_LOG") == "all" {
				n = 0
			}
			t.Logf("last operations:\n%s", joinLines(m.log[n:]))
			m.logMu.Unlock()
		}
	}()
	for i, name := range []string{"host-a", "host-b"} {
		maps, data, _ := open(t)
		e, err := New(maps, data, Options{Owner: name, BlockSize: modelBS})
		if err != nil {
			t.Fatal(err)
		}
		e.pollMin, e.pollMax = 50*time.Microsecond, time.Millisecond
		e.confirmEvery, e.fenceWait = 0, 0
		m.hosts[i] = &gcHost{name: name, e: e, maps: maps, data: data}
	}
	for i := range 3 {
		m.create(m.hosts[i%2], uint64(16<<i))
	}
	// The collectors: one per host, back to back; a third of them
	// cancelled at a random step.
	stop := make(chan struct{})
	kick := [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	var wg sync.WaitGroup
	var gcMu sync.Mutex
	gcCounts := map[string]int{}
	for i, h := range m.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-kick[i]:
				}
				ctx, cancel := context.WithCancel(m.ctx)
				o := GCOptions{}
				kill := -1
				if rng.IntN(3) == 0 {
					kill = rng.IntN(8)
				}
				k := 0
				o.hook = func(string) {
					if k++; k == kill {
						cancel()
					}
				}
				rep, err := h.e.GC(ctx, o)
				cancel()
				what := "done"
				switch {
				case err == nil:
					m.logf("%s: gc %d: %+v", h.name, n, *rep)
				case errors.Is(err, errs.ErrLocked):
					what = "locked"
				case errors.Is(err, context.Canceled) && kill >= 0:
					what = "killed"
					m.logf("%s: gc %d killed at step %d: %v", h.name, n, kill, err)
				default:
					t.Errorf("%s: gc %d: %v", h.name, n, err)
					return
				}
				gcMu.Lock()
				gcCounts[what]++
				if rep != nil {
					gcCounts["deleted"] += rep.Deleted
					gcCounts["protected"] += rep.Protected
					gcCounts["problems"] += len(rep.Problems)
					for _, p := range rep.Problems {
						m.logf("%s: gc %d: problem: %s", h.name, n, p)
					}
				}
				gcMu.Unlock()
			}
		}()
	}
	start := time.Now()
	for step := 0; step < steps && !t.Failed(); step++ {
		for _, k := range kick { // a collection runs during the next steps
			select {
			case k <- struct{}{}:
			default:
			}
		}
		m.step(step)
		m.verifyAll(step)
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	m.quiet()
	t.Logf("%d steps in %v: %v; collections: %v", steps, time.Since(start).Round(time.Millisecond), m.counts, gcCounts)
}

func (m *gcModel) newName() string {
	m.seq++
	return fmt.Sprintf("vol-%04d", m.seq)
}

func (m *gcModel) create(h *gcHost, size uint64) {
	m.t.Helper()
	name := m.newName()
	size *= modelBS
	m.logf("%s: create %s %d", h.name, name, size)
	if err := h.e.Create(m.ctx, name, size); err != nil {
		m.t.Fatalf("create %s on %s: %v", name, h.name, err)
	}
	m.vols[name] = &mvol{size: size, blocks: make(map[uint64][]byte)}
}

// free makes sure the other host does not hold name's lock (it closes
// the volume, as a migration does).
func (m *gcModel) free(o *gcHost, name string) {
	m.t.Helper()
	ow, err := o.e.locker.LockOwner(m.ctx, lockName(name))
	if err == nil && ow == o.name {
		m.logf("%s: close %s (hand-off)", o.name, name)
		if err := o.e.Close(m.ctx, name); err != nil {
			m.t.Fatalf("close %s on %s: %v", name, o.name, err)
		}
	}
}

func (m *gcModel) rangeIn(v *mvol) (uint64, uint64) {
	off := m.rng.Uint64N(v.size)
	n := 1 + m.rng.Uint64N(3*modelBS)
	return off, min(n, v.size-off)
}

func (m *gcModel) step(step int) {
	ctx := m.ctx
	hi := m.rng.IntN(2)
	h, o := m.hosts[hi], m.hosts[1-hi]
	r := m.rng.IntN(100)
	if len(m.vols) > 14 && r >= 40 && r < 70 {
		r = 70 // keep the population small: remove instead of adding
	}
	var op string
	var err error
	switch {
	case r < 32: // write
		name, v := pickVol(m.rng, m.vols, true)
		if v == nil {
			m.create(h, 16)
			return
		}
		m.free(o, name)
		off, n := m.rangeIn(v)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(m.rng.IntN(255) + 1)
		}
		op = fmt.Sprintf("write %s %d %d", name, off, n)
		m.logf("%d: %s: %s", step, h.name, op)
		if err = writeVol(ctx, h.e, h.data, name, off, p); err == nil {
			v.write(off, p)
		}
	case r < 40: // trim
		name, v := pickVol(m.rng, m.vols, true)
		if v == nil {
			return
		}
		m.free(o, name)
		off, n := m.rangeIn(v)
		if m.rng.IntN(2) == 0 {
			off, n = off/modelBS*modelBS, min(v.size-off/modelBS*modelBS, 4*modelBS)
		}
		op = fmt.Sprintf("trim %s %d %d", name, off, n)
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Trim(ctx, name, off, n); err == nil {
			b0, b1 := (off+modelBS-1)/modelBS, (off+n)/modelBS
			if off+n == v.size {
				b1 = (v.size + modelBS - 1) / modelBS
			}
			if b0 < b1 {
				v.trim(b0, b1)
			}
		}
	case r < 50: // snapshot
		name, v := pickVol(m.rng, m.vols, true)
		if v == nil {
			return
		}
		m.free(o, name)
		snap := m.newName()
		op = fmt.Sprintf("snapshot %s %s", name, snap)
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Snapshot(ctx, name, snap); err == nil {
			s := v.clone()
			s.snap = true
			m.vols[snap] = s
		}
	case r < 58: // clone, sometimes larger
		var snaps []string
		for n, v := range m.vols {
			if v.snap {
				snaps = append(snaps, n)
			}
		}
		if len(snaps) == 0 {
			return
		}
		slices.Sort(snaps)
		parent := snaps[m.rng.IntN(len(snaps))]
		pv := m.vols[parent]
		size := pv.size
		if m.rng.IntN(3) == 0 {
			size += uint64(m.rng.IntN(300)) * modelBS
		}
		name := m.newName()
		op = fmt.Sprintf("clone %s %s %d", parent, name, size)
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Clone(ctx, parent, name, size); err == nil {
			c := pv.clone()
			c.snap, c.size = false, size
			m.vols[name] = c
		}
	case r < 63: // create
		m.create(h, uint64(1+m.rng.IntN(64)))
		return
	case r < 70: // rename
		name, v := pickVol(m.rng, m.vols, false)
		m.free(o, name)
		to := m.newName()
		op = fmt.Sprintf("rename %s %s", name, to)
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Rename(ctx, name, to); err == nil {
			delete(m.vols, name)
			m.vols[to] = v
		}
	case r < 80: // remove
		if len(m.vols) < 4 {
			return
		}
		name, _ := pickVol(m.rng, m.vols, false)
		m.free(o, name)
		op = "remove " + name
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Remove(ctx, name); err == nil {
			delete(m.vols, name)
		}
	case r < 88: // resize
		name, v := pickVol(m.rng, m.vols, true)
		if v == nil {
			return
		}
		m.free(o, name)
		size := v.size/2 + 1 + m.rng.Uint64N(v.size)
		if m.rng.IntN(3) == 0 {
			size = v.size + m.rng.Uint64N(300*modelBS)
		}
		op = fmt.Sprintf("resize %s %d", name, size)
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Resize(ctx, name, size, true); err == nil {
			v.resize(size)
		}
	case r < 94: // h breaks the lock the other host holds: the old holder is fenced
		var held []string
		for _, n := range slices.Sorted(maps.Keys(m.vols)) {
			if ow, err := h.e.locker.LockOwner(ctx, lockName(n)); err == nil && ow == o.name && !m.vols[n].snap {
				held = append(held, n)
			}
		}
		if len(held) == 0 {
			return
		}
		name := held[m.rng.IntN(len(held))]
		v := m.vols[name]
		op = "unlock -f " + name
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Unlock(ctx, name, true); err != nil {
			break
		}
		// The old holder's late write fails and changes nothing; it
		// copies nothing that anybody links.
		off, n := m.rangeIn(v)
		if werr := writeVol(ctx, o.e, o.data, name, off, bytes.Repeat([]byte{0xfe}, int(n))); !errors.Is(werr, errs.ErrFenced) {
			m.t.Fatalf("step %d: after %s on %s, a write of the old holder %s: %v, want ErrFenced", step, op, h.name, o.name, werr)
		}
		if err = o.e.Close(ctx, name); err != nil {
			break
		}
	default: // close on a host
		name, _ := pickVol(m.rng, m.vols, false)
		op = "close " + name
		m.logf("%d: %s: %s", step, h.name, op)
		if err = h.e.Close(ctx, name); errors.Is(err, errs.ErrNotOwner) {
			err = nil
		}
	}
	if err != nil {
		m.t.Fatalf("step %d: %s on %s: %v", step, op, h.name, err)
	}
	if op != "" {
		m.counts[strings.Fields(op)[0]]++
	}
}

// verifyAll reads every volume whole from a random host and compares it
// with the oracle.
func (m *gcModel) verifyAll(step int) {
	m.t.Helper()
	for _, n := range slices.Sorted(maps.Keys(m.vols)) {
		v := m.vols[n]
		h := m.hosts[m.rng.IntN(2)]
		got, err := readVol(m.ctx, h.e, h.data, n, 0, v.size)
		if err != nil {
			m.t.Fatalf("after step %d: read %s on %s: %v", step, n, h.name, err)
		}
		if want := v.read(0, v.size); !bytes.Equal(got, want) {
			for b := uint64(0); b*modelBS < v.size; b++ {
				lo, hi := b*modelBS, min((b+1)*modelBS, v.size)
				if !bytes.Equal(got[lo:hi], want[lo:hi]) {
					m.t.Fatalf("after step %d: volume %s block %d on %s differs from the oracle:\n got %s\nwant %s",
						step, n, b, h.name, runs(got[lo:hi]), runs(want[lo:hi]))
				}
			}
		}
	}
}

// quiet gives every lock back, collects once more and checks that the
// stores hold only what some header reaches, and no root marker.
func (m *gcModel) quiet() {
	t := m.t
	t.Helper()
	for _, h := range m.hosts {
		for _, n := range slices.Sorted(maps.Keys(m.vols)) {
			if err := h.e.Close(m.ctx, n); err != nil && !errors.Is(err, errs.ErrNotOwner) {
				t.Fatalf("close %s on %s: %v", n, h.name, err)
			}
		}
	}
	e := m.hosts[0].e
	rep := runGC(t, e, GCOptions{})
	m.logf("final gc: %+v", *rep)
	if g := gcGarbage(t, e); len(g) != 0 {
		t.Fatalf("after the final gc (%+v), unreachable objects left: %q", *rep, g)
	}
	var markers []string
	if err := e.maps.List(m.ctx, rootMarkerPrefix, func(n string) error { markers = append(markers, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(markers) != 0 {
		t.Fatalf("after the final gc (%+v), root markers left: %q", *rep, markers)
	}
	if _, err := e.locker.LockOwner(m.ctx, lockName(gcLockName)); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("the collector's lock is held after the final gc: %v", err)
	}
	if err := Check(m.ctx, e.maps); err != nil {
		t.Fatal(err)
	}
	m.verifyAll(-1)
}

// TestGCKilledAnywhere: a collection that fails or dies at its Nth store
// call, for every N it makes, loses nothing reachable (the oracle), and a
// later collection finishes the job: nothing unreachable left, and the
// collector's lock free. A collection that died (a crash: its lock stays
// held) is refused to another host until forced, and the lock goes back
// when its own host's mapper starts again (its intent).
func TestGCKilledAnywhere(t *testing.T) {
	build := func(t *testing.T) (*env, *gcFixture) {
		v, f := newGCFixture(t)
		f.create("vm", 300)
		f.write("vm", 0, 6, 'a')
		f.write("vm", 280, 284, 'a')
		f.snapshot("vm", "s1")
		f.write("vm", 2, 8, 'b')
		f.clone("s1", "c")
		f.write("c", 0, 2, 'c')
		f.snapshot("vm", "s2")
		f.write("vm", 0, 4, 'd')
		f.remove("s1")
		f.rename("vm", "vm2")
		f.remove("s2")
		f.create("gone", 16)
		f.write("gone", 0, 4, 'g')
		f.snapshot("gone", "gs")
		f.remove("gone")
		f.remove("gs")
		for _, n := range []string{"vm2", "c"} {
			if err := f.e.Close(context.Background(), n); err != nil {
				t.Fatal(err)
			}
		}
		return v, f
	}
	// How many mutating store calls does a whole collection make?
	v, f := build(t)
	start := v.plan.Index()
	rep := runGC(t, v.e, GCOptions{})
	total := v.plan.Index() - start
	if rep.Deleted < 10 || total < 10 {
		t.Fatalf("the scenario's collection deleted %d objects in %d calls", rep.Deleted, total)
	}
	ctx := context.Background()
	for n := range total {
		for _, mode := range []faultstore.Mode{faultstore.Fail, faultstore.Crash} {
			t.Run(fmt.Sprintf("%d/%v", n, map[faultstore.Mode]string{faultstore.Fail: "fail", faultstore.Crash: "crash"}[mode]), func(t *testing.T) {
				v, f := build(t)
				in := &memIntents{}
				e, err := New(v.e.maps, v.e.data, Options{Owner: "host-a", BlockSize: modelBS, Intents: in})
				if err != nil {
					t.Fatal(err)
				}
				v.plan.Arm(v.plan.Index()+n, mode)
				_, gcErr := e.GC(ctx, GCOptions{})
				if !v.plan.Fired() {
					t.Fatalf("no fault at call %d (gc: %v)", n, gcErr)
				}
				v.plan.Disarm()
				if mode == faultstore.Crash {
					v.crash(t) // what the stores made durable
					b := twoEngines(t, v, "host-b")
					if _, err := b.GC(ctx, GCOptions{}); err != nil && !errors.Is(err, errs.ErrLocked) {
						t.Fatalf("gc on host-b after host-a's died: %v", err)
					}
					// host-a's mapper starts again: the intent gives the
					// lock back.
					e, err = New(v.e.maps, v.e.data, Options{Owner: "host-a", BlockSize: modelBS, Intents: in})
					if err != nil {
						t.Fatal(err)
					}
					if err := e.RecoverIntents(ctx); err != nil {
						t.Fatal(err)
					}
				}
				f.e = e
				if _, err := e.GC(ctx, GCOptions{}); err != nil {
					t.Fatalf("gc after the one that failed at call %d: %v", n, err)
				}
				if g := gcGarbage(t, e); len(g) != 0 {
					t.Fatalf("unreachable objects left: %q", g)
				}
				if o, err := e.locker.LockOwner(ctx, lockName(gcLockName)); !errors.Is(err, errs.ErrNotFound) {
					t.Fatalf("the collector's lock is held by %q (%v)", o, err)
				}
				if p, _ := in.Pending(); len(p) != 0 {
					t.Fatalf("intents left: %q", p)
				}
				checkOracle(t, e, f.vols)
			})
		}
	}
	// A failure of any other call (read, stat, list, lock): the
	// collection fails, and the next one does the job.
	reads, kills := 0, 0
	for n := 0; ; n += 3 { // every third call: they come in runs of one kind
		v, f := build(t)
		flt := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpRead | faultstore.OpStat | faultstore.OpList | faultstore.OpLock,
			Skip: n, Times: 1, Errno: syscall.EIO})
		_, gcErr := v.e.GC(ctx, GCOptions{})
		if flt.Hits() == 0 {
			if n < 20 {
				t.Fatalf("only %d reads in a collection", n)
			}
			reads = n
			break
		}
		flt.Remove()
		if _, err := v.e.GC(ctx, GCOptions{}); err != nil {
			t.Fatalf("gc after one whose read %d failed (%v): %v", n, gcErr, err)
		}
		if g := gcGarbage(t, v.e); len(g) != 0 {
			t.Fatalf("after a failure at read %d (%v), unreachable objects left: %q", n, gcErr, g)
		}
		if _, err := v.e.locker.LockOwner(ctx, lockName(gcLockName)); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("after a failure at read %d (%v) the collector's lock is held: %v", n, gcErr, err)
		}
		checkOracle(t, v.e, f.vols)
	}
	// Killed (SIGKILL: what the stores made durable stays, its lock
	// too) between any two of its steps.
	for k := 1; ; k++ {
		v, f := build(t)
		in := &memIntents{}
		e, err := New(v.e.maps, v.e.data, Options{Owner: "host-a", BlockSize: modelBS, Intents: in})
		if err != nil {
			t.Fatal(err)
		}
		var deadMaps, deadData *memstore.Store
		var deadIntents []string
		step, at := 0, ""
		_, _ = e.GC(ctx, GCOptions{hook: func(s string) {
			if step++; step == k {
				deadMaps, deadData, at = v.maps.Crash(), v.data.Crash(), s
				deadIntents, _ = in.Pending()
			}
		}})
		if deadMaps == nil {
			if k < 8 {
				t.Fatalf("only %d steps in a collection", k)
			}
			kills = k - 1
			break
		}
		v.maps, v.data = deadMaps, deadData
		v.restart(t)
		b := twoEngines(t, v, "host-b")
		if _, err := b.GC(ctx, GCOptions{}); !errors.Is(err, errs.ErrLocked) {
			t.Fatalf("killed after %q: gc on host-b: %v, want ErrLocked", at, err)
		}
		in = &memIntents{}
		for _, n := range deadIntents {
			in.Begin(n)
		}
		e, err = New(v.e.maps, v.e.data, Options{Owner: "host-a", BlockSize: modelBS, Intents: in})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.RecoverIntents(ctx); err != nil {
			t.Fatal(err)
		}
		f.e = e
		runGC(t, b, GCOptions{}) // the lock went back
		if g := gcGarbage(t, b); len(g) != 0 {
			t.Fatalf("killed after %q: unreachable objects left: %q", at, g)
		}
		checkOracle(t, e, f.vols)
	}
	t.Logf("a collection makes %d mutating store calls, %d other calls and %d steps: failed or killed at each (every third of the other calls)", total, reads, kills)
	// A collection that died holds the lock: another host is refused
	// (naming the holder) until it forces.
	v, f = build(t)
	v.plan.Arm(v.plan.Index()+total/2, faultstore.Crash)
	if _, err := v.e.GC(ctx, GCOptions{}); err == nil {
		t.Fatal("gc survived a crash")
	}
	v.crash(t)
	b := twoEngines(t, v, "host-b")
	if _, err := b.GC(ctx, GCOptions{}); !errors.Is(err, errs.ErrLocked) || !strings.Contains(err.Error(), "host-a") {
		t.Fatalf("gc on host-b while host-a's dead collection holds the lock: %v, want ErrLocked naming host-a", err)
	}
	runGC(t, b, GCOptions{Force: true})
	if g := gcGarbage(t, b); len(g) != 0 {
		t.Fatalf("unreachable objects left after a forced gc: %q", g)
	}
	f.e = b
	checkOracle(t, b, f.vols)
}
