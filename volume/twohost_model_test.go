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
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/filestore"
)

// The two-host model test: two engines of different owners, each over
// stores of its own (own file descriptor cache, own connection) on ONE
// shared storage, run random volume operations and I/O against the byte
// oracle of the model test, with the seed's lock rules:
//
//   - an operation on a volume the other host holds is refused with
//     "locked by <other>" and changes nothing; one on a volume nobody or
//     this host holds is not refused;
//   - a write on a host whose volume the other host holds would wait: the
//     model hands the volume off first (Close on the holder), as a live
//     migration does;
//   - reads never wait, and read what the oracle says from either host;
//   - after a host breaks the other's lock (unlock -f), the old holder's
//     next write fails with ErrFenced and changes nothing, and after its
//     Close both hosts read the oracle;
//   - after every step both hosts list the oracle's volumes and Check
//     finds the maps consistent.
//
// Replay a run with VOLUME_MODEL_SEED=<seed> (and VOLUME_MODEL_STEPS=<n>);
// the seed is logged.

// sharedStores opens the stores of one host on the shared storage: a new
// instance each call (a host's process), closed at the test's end or by
// the returned close.
type sharedStores func(t *testing.T) (maps, data store.Store, close func())

// fileShared is a directory shared by the hosts: each call opens its own
// filestore.Store instances on it. The directory is on /dev/shm if there
// is one: the test is about what each instance caches, not about disks,
// and a disk's fsyncs made it three times slower.
func fileShared(t *testing.T) sharedStores {
	dir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "twohost-model-"); err == nil {
		dir = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	return func(t *testing.T) (store.Store, store.Store, func()) {
		t.Helper()
		return storePair(t, func(which string) (store.Store, error) {
			return filestore.Open(filestore.Options{Dir: dir + "/" + which})
		})
	}
}

// storePair opens a host's "maps" and "data" stores with open, and
// returns them with a function that closes both (once; also at the end of
// the test).
func storePair(t *testing.T, open func(which string) (store.Store, error)) (store.Store, store.Store, func()) {
	t.Helper()
	m, err := open("maps")
	if err != nil {
		t.Fatal(err)
	}
	d, err := open("data")
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	var once sync.Once
	cl := func() { once.Do(func() { m.Close(); d.Close() }) }
	t.Cleanup(cl)
	return m, d, cl
}

func TestTwoHostModelSharedDirectory(t *testing.T) {
	for _, seed := range []uint64{11, 12} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			seed := modelSeed(t, seed)
			t.Logf("seed %d (replay: VOLUME_MODEL_SEED=%d go test -run 'TestTwoHostModelSharedDirectory/%d' ./volume)", seed, seed, seed)
			runTwoHostModel(t, seed, modelSteps(400), fileShared(t))
		})
	}
}

// host is one host of the two-host model.
type host struct {
	name       string
	e          *Engine
	maps, data store.Store
	close      func()
}

type twoModel struct {
	t      *testing.T
	rng    *rand.Rand
	ctx    context.Context
	open   sharedStores
	hosts  [2]*host
	check  store.Store // a third instance of the maps store, for Check
	ce     *Engine     // an engine over check, that never takes a lock
	vols   map[string]*mvol
	gone   []string // names removed or renamed away, to try again
	seq    int
	log    []string
	counts map[string]int
	raced  bool // the last step raced: both hosts list after it
}

func runTwoHostModel(t *testing.T, seed uint64, steps int, open sharedStores) {
	m := &twoModel{t: t, rng: rand.New(rand.NewPCG(seed, 0x2405)), ctx: context.Background(), open: open,
		vols: make(map[string]*mvol), counts: make(map[string]int)}
	defer func() {
		if t.Failed() {
			n := max(0, len(m.log)-60)
			t.Logf("last operations:\n%s", joinLines(m.log[n:]))
		}
	}()
	for i, name := range []string{"host-a", "host-b"} {
		m.hosts[i] = &host{name: name}
		m.restart(i)
	}
	m.check, _, _ = open(t)
	ce, err := New(m.check, m.check, Options{Owner: "invariant-checker"})
	if err != nil {
		t.Fatal(err)
	}
	m.ce = ce
	for i, size := range []uint64{64 << 10, 2 << 20, 1 << 30} {
		m.create(m.hosts[i%2], m.newName(), size)
	}
	start := time.Now()
	for step := 0; step < steps && !t.Failed(); step++ {
		h := m.step(step)
		why := fmt.Sprintf("after step %d", step)
		if m.raced {
			m.raced = false
			m.invariants(why)
		} else if step%10 == 9 {
			m.invariants(why, m.other(h))
		} else if err := m.ce.check(m.ctx, slices.Sorted(maps.Keys(m.vols))); err != nil {
			t.Fatalf("%s: %v", why, err)
		}
	}
	for i := range m.hosts {
		m.restart(i)
	}
	m.verifyAll("final restart")
	t.Logf("%d steps in %v: %v", steps, time.Since(start).Round(time.Millisecond), m.counts)
}

func (m *twoModel) logf(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf(format, args...))
}

func (m *twoModel) newName() string {
	m.seq++
	return fmt.Sprintf("vol-%04d", m.seq)
}

// restart replaces host i's process: new stores (a cold descriptor
// cache, a new connection) and a new engine of the same identity.
func (m *twoModel) restart(i int) {
	h := m.hosts[i]
	if h.close != nil {
		h.close()
	}
	h.maps, h.data, h.close = m.open(m.t)
	e, err := New(h.maps, h.data, Options{Owner: h.name, BlockSize: modelBS})
	if err != nil {
		m.t.Fatal(err)
	}
	e.pollMin, e.pollMax = 50*time.Microsecond, time.Millisecond
	// A lease of zero: a forced unlock fences at once, and the old
	// holder asks the store at every write (FenceWait >= ConfirmEvery
	// still holds).
	e.confirmEvery, e.fenceWait = 0, 0
	h.e = e
}

func (m *twoModel) other(h *host) *host {
	if h == m.hosts[0] {
		return m.hosts[1]
	}
	return m.hosts[0]
}

// owner is the holder of volume name's lock, "" if free.
func (m *twoModel) owner(name string) string {
	o, err := m.check.(store.Locker).LockOwner(m.ctx, lockName(name))
	if errors.Is(err, errs.ErrNotFound) {
		return ""
	}
	if err != nil {
		m.t.Fatalf("lock owner of %s: %v", name, err)
	}
	return o
}

// refusal checks err against the lock rules: refused with "locked by
// <other>" exactly if the other host held one of the volumes the
// operation locks. It returns whether the operation went on.
func (m *twoModel) refusal(step int, op string, h *host, heldByOther bool, err error) bool {
	m.t.Helper()
	other := m.other(h).name
	if heldByOther {
		if err == nil {
			m.t.Fatalf("step %d: %s on %s succeeded while %s held the lock", step, op, h.name, other)
		}
		var le *store.LockedError
		if !errors.As(err, &le) || le.Owner != other || !strings.Contains(err.Error(), "locked by "+other) {
			m.t.Fatalf("step %d: %s on %s while %s held the lock: %v, want a refusal naming %s", step, op, h.name, other, err, other)
		}
		m.counts["refused"]++
		return false
	}
	if err != nil {
		m.t.Fatalf("step %d: %s on %s: %v", step, op, h.name, err)
	}
	return true
}

// pick returns a random volume name (writable ones only if rw).
func (m *twoModel) pick(rw bool) (string, *mvol) { return pickVol(m.rng, m.vols, rw) }

func (m *twoModel) rangeIn(v *mvol, maxLen uint64) (uint64, uint64) {
	nb := (v.size + modelBS - 1) / modelBS
	hot := []uint64{0, 1, 2, 255, 256, 257, nb - 1, nb / 2}
	b := m.rng.Uint64N(nb)
	if m.rng.IntN(3) > 0 {
		if c := hot[m.rng.IntN(len(hot))]; c < nb {
			b = c
		}
	}
	off := min(b*modelBS+uint64(m.rng.IntN(modelBS)), v.size-1)
	n := 1 + m.rng.Uint64N(maxLen)
	return off, min(n, v.size-off)
}

func (m *twoModel) create(h *host, name string, size uint64) {
	m.logf("%s: create %s %d", h.name, name, size)
	if err := h.e.Create(m.ctx, name, size); err != nil {
		m.t.Fatalf("create %s on %s: %v", name, h.name, err)
	}
	m.vols[name] = &mvol{size: size, blocks: make(map[uint64][]byte)}
	m.gone = slices.DeleteFunc(m.gone, func(g string) bool { return g == name })
}

func (m *twoModel) forget(name string) {
	delete(m.vols, name)
	m.gone = append(m.gone, name)
}

// step runs one random operation on a random host, which it returns.
func (m *twoModel) step(step int) *host {
	ctx := m.ctx
	h := m.hosts[m.rng.IntN(2)]
	o := m.other(h)
	r := m.rng.IntN(100)
	if len(m.vols) > 16 && r >= 50 && r < 64 {
		r = 64 // keep the population small: remove instead of adding
	}
	var op string
	switch {
	case r < 32: // write, handing the volume off if the other host holds it
		name, v := m.pick(true)
		if v == nil {
			m.create(h, m.newName(), 1<<20)
			return h
		}
		if m.owner(name) == o.name {
			m.logf("%d: %s: close %s (hand-off to %s)", step, o.name, name, h.name)
			if err := o.e.Close(ctx, name); err != nil {
				m.t.Fatalf("step %d: hand-off: close %s on %s: %v", step, name, o.name, err)
			}
			m.counts["hand-off"]++
		}
		off, n := m.rangeIn(v, 3*modelBS)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(m.rng.IntN(255) + 1)
		}
		op = fmt.Sprintf("write %s %d %d", name, off, n)
		m.logf("%d: %s: %s", step, h.name, op)
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := writeVol(wctx, h.e, h.data, name, off, p)
		cancel()
		if err != nil {
			m.t.Fatalf("step %d: %s on %s (lock owner now %q): %v", step, op, h.name, m.owner(name), err)
		}
		v.write(off, p)
		if ow := m.owner(name); ow == o.name {
			m.t.Fatalf("step %d: after %s on %s the lock is %s's", step, op, h.name, ow)
		}
	case r < 47: // read, from either host, whoever holds the volume
		name, v := m.pick(false)
		off, n := m.rangeIn(v, 3*modelBS)
		op = fmt.Sprintf("read %s %d %d", name, off, n)
		m.logf("%d: %s: %s (held by %q)", step, h.name, op, m.owner(name))
		got, err := readVol(ctx, h.e, h.data, name, off, n)
		if err != nil {
			m.t.Fatalf("step %d: %s on %s: %v", step, op, h.name, err)
		}
		if want := v.read(off, n); !bytes.Equal(got, want) {
			m.t.Fatalf("step %d: %s on %s differs from the oracle:\n got %s\nwant %s", step, op, h.name, runs(got), runs(want))
		}
	case r < 54: // snapshot
		name, v := m.pick(true)
		if v == nil {
			return h
		}
		snap := m.newName()
		op = fmt.Sprintf("snapshot %s %s", name, snap)
		held := m.owner(name) == o.name
		m.logf("%d: %s: %s", step, h.name, op)
		if m.refusal(step, op, h, held, h.e.Snapshot(ctx, name, snap)) {
			s := v.clone()
			s.snap = true
			m.vols[snap] = s
		}
	case r < 61: // clone of a snapshot (only the new name is locked)
		var snaps []string
		for n, v := range m.vols {
			if v.snap {
				snaps = append(snaps, n)
			}
		}
		if len(snaps) == 0 {
			return h
		}
		slices.Sort(snaps)
		parent := snaps[m.rng.IntN(len(snaps))]
		pv := m.vols[parent]
		size := pv.size
		if m.rng.IntN(2) == 0 {
			size += m.rng.Uint64N(min(pv.size*4, 4<<30)) + 1
		}
		name := m.newName()
		op = fmt.Sprintf("clone %s %s %d", parent, name, size)
		m.logf("%d: %s: %s", step, h.name, op)
		if m.refusal(step, op, h, false, h.e.Clone(ctx, parent, name, size)) {
			c := pv.clone()
			c.snap, c.size = false, size
			m.vols[name] = c
		}
	case r < 64: // create, sometimes under a name used before
		name := m.newName()
		if len(m.gone) > 0 && m.rng.IntN(2) == 0 {
			name = m.gone[m.rng.IntN(len(m.gone))]
		}
		m.create(h, name, uint64(1+m.rng.IntN(64))*modelBS*16)
		return h
	case r < 68: // remove
		if len(m.vols) < 3 {
			return h
		}
		name, _ := m.pick(false)
		op = "remove " + name
		held := m.owner(name) == o.name
		m.logf("%d: %s: %s", step, h.name, op)
		if m.refusal(step, op, h, held, h.e.Remove(ctx, name)) {
			m.forget(name)
		}
	case r < 72: // rename, sometimes to a name used before
		name, v := m.pick(false)
		to := m.newName()
		if len(m.gone) > 0 && m.rng.IntN(2) == 0 {
			to = m.gone[m.rng.IntN(len(m.gone))]
		}
		op = fmt.Sprintf("rename %s %s", name, to)
		held := m.owner(name) == o.name || m.owner(to) == o.name
		m.logf("%d: %s: %s", step, h.name, op)
		if m.refusal(step, op, h, held, h.e.Rename(ctx, name, to)) {
			m.forget(name)
			m.vols[to] = v
			m.gone = slices.DeleteFunc(m.gone, func(g string) bool { return g == to })
		}
	case r < 78: // resize
		name, v := m.pick(true)
		if v == nil {
			return h
		}
		size := v.size/2 + 1 + m.rng.Uint64N(v.size)
		if m.rng.IntN(3) == 0 {
			size = v.size + m.rng.Uint64N(1<<24)
		}
		op = fmt.Sprintf("resize %s %d", name, size)
		held := m.owner(name) == o.name
		m.logf("%d: %s: %s", step, h.name, op)
		if m.refusal(step, op, h, held, h.e.Resize(ctx, name, size, true)) {
			v.resize(size)
		}
	case r < 83: // open: the host holds the volume afterwards
		name, _ := m.pick(false)
		op = "open " + name
		held := m.owner(name) == o.name
		m.logf("%d: %s: %s", step, h.name, op)
		if m.refusal(step, op, h, held, h.e.Open(ctx, name)) {
			if ow := m.owner(name); ow != h.name {
				m.t.Fatalf("step %d: after %s on %s the lock is %q's", step, op, h.name, ow)
			}
		}
	case r < 88: // close: refused (not the owner) if the other host holds it
		name, _ := m.pick(false)
		op = "close " + name
		held := m.owner(name) == o.name
		m.logf("%d: %s: %s", step, h.name, op)
		err := h.e.Close(ctx, name)
		switch {
		case held && !errors.Is(err, errs.ErrNotOwner):
			m.t.Fatalf("step %d: %s on %s while %s held it: %v, want ErrNotOwner", step, op, h.name, o.name, err)
		case !held && err != nil:
			m.t.Fatalf("step %d: %s on %s: %v", step, op, h.name, err)
		case !held:
			if ow := m.owner(name); ow != "" {
				m.t.Fatalf("step %d: after %s on %s the lock is %q's", step, op, h.name, ow)
			}
		}
	case r < 91: // a name removed or renamed away is gone on both hosts
		if len(m.gone) == 0 {
			return h
		}
		name := m.gone[m.rng.IntN(len(m.gone))]
		op = "ghost " + name
		m.logf("%d: %s: %s", step, h.name, op)
		if _, err := h.e.Info(ctx, name); !errors.Is(err, errs.ErrNotFound) {
			m.t.Fatalf("step %d: info of %s (gone) on %s: %v, want ErrNotFound", step, name, h.name, err)
		}
		if _, err := h.e.MapRead(ctx, name, 0, 1); !errors.Is(err, errs.ErrNotFound) {
			m.t.Fatalf("step %d: read of %s (gone) on %s: %v, want ErrNotFound", step, name, h.name, err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := h.e.MapWrite(wctx, name, 0, 1)
		cancel()
		if !errors.Is(err, errs.ErrNotFound) {
			m.t.Fatalf("step %d: write to %s (gone) on %s: %v, want ErrNotFound", step, name, h.name, err)
		}
	case r < 93:
		op = "restart"
		m.logf("%d: %s: restart", step, h.name)
		if h == m.hosts[0] {
			m.restart(0)
		} else {
			m.restart(1)
		}
	case r < 96: // the two hosts race on the same names
		op = m.race(step)
		m.raced = true
	case r < 98: // h breaks a lock the other host holds: that host is fenced
		var held []string
		for _, n := range slices.Sorted(maps.Keys(m.vols)) {
			if !m.vols[n].snap && m.owner(n) == o.name {
				held = append(held, n)
			}
		}
		if len(held) == 0 {
			return h
		}
		name := held[m.rng.IntN(len(held))]
		v := m.vols[name]
		op = "unlock -f " + name
		// The lock may be the old holder's from before its restart: then
		// its process holds nothing (caches nothing) and is not fenced.
		cached := o.e.Held(name)
		m.logf("%d: %s: %s (held by %s, cached there: %v)", step, h.name, op, o.name, cached)
		if err := h.e.Unlock(ctx, name, true); err != nil {
			m.t.Fatalf("step %d: %s on %s: %v", step, op, h.name, err)
		}
		// The old holder's next write fails and changes nothing.
		off, n := m.rangeIn(v, 3*modelBS)
		m.logf("%d: %s: write %s %d %d", step, o.name, name, off, n)
		p := fill(0xfe, int(n))
		err := writeVol(ctx, o.e, o.data, name, off, p)
		switch {
		case cached && !errors.Is(err, errs.ErrFenced):
			m.t.Fatalf("step %d: after %s on %s, a write of the old holder %s: %v, want ErrFenced", step, op, h.name, o.name, err)
		case !cached && err != nil:
			m.t.Fatalf("step %d: after %s on %s, a write of %s, which held the lock before its restart: %v", step, op, h.name, o.name, err)
		case !cached:
			v.write(off, p)
		default:
			m.counts["fenced"]++
		}
		// Closed on the old holder, the volume takes writes again.
		if err := o.e.Close(ctx, name); err != nil {
			m.t.Fatalf("step %d: close %s on %s (fenced): %v", step, name, o.name, err)
		}
		m.verify(o, name, v)
		m.verify(h, name, v)
	default: // full check of one volume
		name, v := m.pick(false)
		op = "verify " + name
		m.logf("%d: %s: %s", step, h.name, op)
		m.verify(h, name, v)
	}
	m.counts[strings.Fields(op)[0]]++
	return h
}

// verify compares volume name, as host h sees it, with its oracle.
func (m *twoModel) verify(h *host, name string, v *mvol) {
	m.t.Helper()
	in, err := h.e.Info(m.ctx, name)
	if err != nil {
		m.t.Fatalf("info %s on %s: %v", name, h.name, err)
	}
	if in.Size != v.size || in.ReadOnly != v.snap {
		m.t.Fatalf("info %s on %s = %+v, oracle size %d snapshot %v", name, h.name, in, v.size, v.snap)
	}
	ext, err := h.e.Allocated(m.ctx, name, 0, v.size)
	if err != nil {
		m.t.Fatalf("allocated %s on %s: %v", name, h.name, err)
	}
	set := make(map[uint64]bool)
	for b := range v.blocks {
		set[b] = true
	}
	for _, x := range ext {
		for b := x.Offset / modelBS; b*modelBS < x.Offset+x.Size; b++ {
			set[b] = true
		}
	}
	for _, b := range slices.Sorted(maps.Keys(set)) {
		off := b * modelBS
		n := min(modelBS, v.size-off)
		got, err := readVol(m.ctx, h.e, h.data, name, off, n)
		if err != nil {
			m.t.Fatalf("read %s block %d on %s: %v", name, b, h.name, err)
		}
		if want := v.read(off, n); !bytes.Equal(got, want) {
			m.t.Fatalf("volume %s block %d on %s differs from the oracle:\n got %s\nwant %s",
				name, b, h.name, runs(got), runs(want))
		}
	}
}

// invariants: hosts (both if none is named) list the oracle's volumes;
// the maps are consistent. A list of a shared directory or a pool costs
// several times a step (10 times on RADOS): after each step the maps of
// the oracle's volumes are checked, and only every 10th step lists, on
// the host that did not run it.
func (m *twoModel) invariants(why string, hosts ...*host) {
	m.t.Helper()
	if m.t.Failed() {
		return
	}
	if len(hosts) == 0 {
		hosts = m.hosts[:]
	}
	want := slices.Sorted(maps.Keys(m.vols))
	for _, h := range hosts {
		var names []string
		if err := h.e.List(m.ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
			m.t.Fatalf("%s: list on %s: %v", why, h.name, err)
		}
		if !slices.Equal(names, want) {
			m.t.Fatalf("%s: %s lists %q, oracle %q", why, h.name, names, want)
		}
	}
	if err := Check(m.ctx, m.check); err != nil {
		m.t.Fatalf("%s: %v", why, err)
	}
}

func (m *twoModel) verifyAll(why string) {
	m.t.Helper()
	m.invariants(why)
	for i, n := range slices.Sorted(maps.Keys(m.vols)) {
		m.verify(m.hosts[i%2], n, m.vols[n])
	}
}

// free makes volume name's lock free: the holder closes it.
func (m *twoModel) free(step int, name string) {
	ow := m.owner(name)
	for _, h := range m.hosts {
		if h.name == ow {
			m.logf("%d: %s: close %s (before a race)", step, h.name, name)
			if err := h.e.Close(m.ctx, name); err != nil {
				m.t.Fatalf("step %d: close %s on %s: %v", step, name, h.name, err)
			}
		}
	}
}

// lost checks the error of an operation that lost a race: a refusal, or
// the name gone or taken by the winner.
func (m *twoModel) lost(step int, op string, h *host, err error) {
	m.t.Helper()
	if !errors.Is(err, errs.ErrLocked) && !errors.Is(err, errs.ErrNotFound) && !errors.Is(err, errs.ErrExists) {
		m.t.Fatalf("step %d: race: %s on %s failed with %v, want a refusal (locked, not found, exists)", step, op, h.name, err)
	}
}

// race runs two management operations on the same names at once, one on
// each host, and checks that they were atomic with respect to each other:
// the outcome is one of the orders in which they could have run one after
// the other. It returns the operation's description.
func (m *twoModel) race(step int) string {
	a, b := m.hosts[0], m.hosts[1]
	if m.rng.IntN(2) == 0 {
		a, b = b, a
	}
	kind := m.rng.IntN(4)
	if len(m.vols) < 3 {
		kind = 1
	}
	name, v := m.pick(false)
	if kind == 3 {
		if name, v = m.pick(true); v == nil {
			kind = 1
		}
	}
	var opA, opB string
	var fa, fb func() error
	switch kind {
	case 0:
		toA, toB := m.newName(), m.newName()
		opA, opB = fmt.Sprintf("rename %s %s", name, toA), fmt.Sprintf("rename %s %s", name, toB)
		fa = func() error { return a.e.Rename(m.ctx, name, toA) }
		fb = func() error { return b.e.Rename(m.ctx, name, toB) }
		defer func() {
			errA, errB := m.runRace(step, a, b, opA, opB, fa, fb)
			switch {
			case errA == nil && errB == nil:
				m.t.Fatalf("step %d: race: both %s on %s and %s on %s succeeded: one volume became two", step, opA, a.name, opB, b.name)
			case errA == nil:
				m.lost(step, opB, b, errB)
				m.forget(name)
				m.vols[toA] = v
			case errB == nil:
				m.lost(step, opA, a, errA)
				m.forget(name)
				m.vols[toB] = v
			default:
				m.t.Fatalf("step %d: race: %s on %s (%v) and %s on %s (%v) both failed", step, opA, a.name, errA, opB, b.name, errB)
			}
		}()
	case 1:
		name = m.newName()
		if len(m.gone) > 0 && m.rng.IntN(2) == 0 {
			name = m.gone[m.rng.IntN(len(m.gone))]
		}
		sizeA, sizeB := uint64(16*modelBS), uint64(32*modelBS)
		opA, opB = fmt.Sprintf("create %s %d", name, sizeA), fmt.Sprintf("create %s %d", name, sizeB)
		fa = func() error { return a.e.Create(m.ctx, name, sizeA) }
		fb = func() error { return b.e.Create(m.ctx, name, sizeB) }
		defer func() {
			errA, errB := m.runRace(step, a, b, opA, opB, fa, fb)
			size := sizeA
			switch {
			case errA == nil && errB == nil:
				m.t.Fatalf("step %d: race: both %s on %s and %s on %s succeeded", step, opA, a.name, opB, b.name)
			case errA == nil:
				m.lost(step, opB, b, errB)
			case errB == nil:
				m.lost(step, opA, a, errA)
				size = sizeB
			default:
				m.t.Fatalf("step %d: race: %s on %s (%v) and %s on %s (%v) both failed", step, opA, a.name, errA, opB, b.name, errB)
			}
			m.vols[name] = &mvol{size: size, blocks: make(map[uint64][]byte)}
			m.gone = slices.DeleteFunc(m.gone, func(g string) bool { return g == name })
		}()
	case 2:
		to := m.newName()
		opA, opB = "remove "+name, fmt.Sprintf("rename %s %s", name, to)
		fa = func() error { return a.e.Remove(m.ctx, name) }
		fb = func() error { return b.e.Rename(m.ctx, name, to) }
		defer func() {
			errA, errB := m.runRace(step, a, b, opA, opB, fa, fb)
			switch {
			case errA == nil && errB == nil:
				m.t.Fatalf("step %d: race: both %s on %s and %s on %s succeeded", step, opA, a.name, opB, b.name)
			case errA == nil:
				m.lost(step, opB, b, errB)
				m.forget(name)
			case errB == nil:
				m.lost(step, opA, a, errA)
				m.forget(name)
				m.vols[to] = v
			default:
				m.t.Fatalf("step %d: race: %s on %s (%v) and %s on %s (%v) both failed", step, opA, a.name, errA, opB, b.name, errB)
			}
		}()
	case 3:
		snap := m.newName()
		opA, opB = fmt.Sprintf("snapshot %s %s", name, snap), "remove "+name
		fa = func() error { return a.e.Snapshot(m.ctx, name, snap) }
		fb = func() error { return b.e.Remove(m.ctx, name) }
		defer func() {
			errA, errB := m.runRace(step, a, b, opA, opB, fa, fb)
			if errA != nil && errB != nil {
				m.t.Fatalf("step %d: race: %s on %s (%v) and %s on %s (%v) both failed", step, opA, a.name, errA, opB, b.name, errB)
			}
			// Both may succeed (snapshot, then remove).
			if errA == nil {
				s := v.clone()
				s.snap = true
				m.vols[snap] = s
			} else {
				m.lost(step, opA, a, errA)
			}
			if errB == nil {
				m.forget(name)
			} else {
				m.lost(step, opB, b, errB)
			}
		}()
	}
	if kind != 1 {
		m.free(step, name)
	}
	return fmt.Sprintf("race %s on %s || %s on %s", opA, a.name, opB, b.name)
}

// runRace runs fa and fb at once and returns their errors.
func (m *twoModel) runRace(step int, a, b *host, opA, opB string, fa, fb func() error) (errA, errB error) {
	start := make(chan struct{})
	done := make(chan struct{})
	go func() {
		<-start
		errB = fb()
		close(done)
	}()
	close(start)
	errA = fa()
	<-done
	m.logf("%d: race: %s on %s -> %v || %s on %s -> %v", step, opA, a.name, errA, opB, b.name, errB)
	return errA, errB
}
