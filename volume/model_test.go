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
	"strconv"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// The model test drives an engine with random operations and compares
// every volume with a plain oracle. Replay a run with
// VOLUME_MODEL_SEED=<seed> (and VOLUME_MODEL_STEPS=<n>).

const modelBS = 4096

// mvol is the oracle of one volume: its blocks (never changed in place,
// so snapshots share them) and size.
type mvol struct {
	size   uint64
	snap   bool
	blocks map[uint64][]byte
}

func (m *mvol) clone() *mvol {
	return &mvol{size: m.size, snap: m.snap, blocks: maps.Clone(m.blocks)}
}

func (m *mvol) read(off, n uint64) []byte {
	out := make([]byte, n)
	for pos := off; pos < off+n; {
		b, in := pos/modelBS, pos%modelBS
		sz := min(modelBS-in, off+n-pos)
		if blk := m.blocks[b]; blk != nil {
			copy(out[pos-off:], blk[in:in+sz])
		}
		pos += sz
	}
	return out
}

func (m *mvol) write(off uint64, p []byte) {
	for pos := off; len(p) > 0; {
		b, in := pos/modelBS, pos%modelBS
		sz := min(modelBS-in, uint64(len(p)))
		blk := make([]byte, modelBS)
		copy(blk, m.blocks[b])
		copy(blk[in:], p[:sz])
		m.blocks[b] = blk
		p, pos = p[sz:], pos+sz
	}
}

// resize cuts or extends; bytes past the size are always zero.
func (m *mvol) resize(size uint64) {
	if size < m.size {
		nb := (size + modelBS - 1) / modelBS
		for b := range m.blocks {
			if b >= nb {
				delete(m.blocks, b)
			}
		}
		if tail := size % modelBS; tail != 0 && m.blocks[nb-1] != nil {
			blk := slices.Clone(m.blocks[nb-1])
			clear(blk[tail:])
			m.blocks[nb-1] = blk
		}
	}
	m.size = size
}

func (m *mvol) trim(b0, b1 uint64) {
	for b := range m.blocks {
		if b0 <= b && b < b1 {
			delete(m.blocks, b)
		}
	}
}

type model struct {
	t    *testing.T
	rng  *rand.Rand
	env  *env
	vols map[string]*mvol
	seq  int
	// faults: inject a crash or failure at a random point of some ops.
	faults bool
	ctx    context.Context
	log    []string
}

func modelSeed(t *testing.T, def uint64) uint64 {
	if s := os.Getenv("VOLUME_MODEL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return def
}

func modelSteps(def int) int {
	if s := os.Getenv("VOLUME_MODEL_STEPS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	if testing.Short() {
		return def / 4
	}
	return def
}

func TestModel(t *testing.T) {
	for _, c := range []struct {
		name   string
		seed   uint64
		faults bool
	}{
		{"plain/1", 1, false}, {"plain/2", 2, false},
		{"faults/3", 3, true}, {"faults/4", 4, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			seed := modelSeed(t, c.seed)
			t.Logf("seed %d (replay: VOLUME_MODEL_SEED=%d go test -run 'TestModel/%s' ./volume)", seed, seed, c.name)
			runModel(t, seed, modelSteps(3000), c.faults)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int, faults bool) {
	m := &model{t: t, rng: rand.New(rand.NewPCG(seed, 0xa5ed)), env: newEnv(t, modelBS),
		vols: make(map[string]*mvol), faults: faults, ctx: context.Background()}
	defer func() {
		if t.Failed() {
			n := max(0, len(m.log)-40)
			t.Logf("last operations:\n%s", joinLines(m.log[n:]))
		}
	}()
	for _, size := range []uint64{64 << 10, 2 << 20, 1 << 30} {
		m.create(size)
	}
	for step := 0; step < steps && !t.Failed(); step++ {
		m.step(step)
		if step%250 == 249 {
			m.verifyAll("periodic")
		}
	}
	m.env.restart(t)
	m.verifyAll("final restart")
	m.env.crash(t)
	m.verifyAll("final crash")
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for _, l := range s {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func (m *model) logf(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf(format, args...))
}

func (m *model) newName() string {
	m.seq++
	return fmt.Sprintf("vol-%04d", m.seq)
}

// pick returns a random volume name (writable ones only if rw).
func (m *model) pick(rw bool) (string, *mvol) { return pickVol(m.rng, m.vols, rw) }

// pickVol returns a random name of vols, in a reproducible way for rng
// (writable volumes only if rw); "" if there is none.
func pickVol(rng *rand.Rand, vols map[string]*mvol, rw bool) (string, *mvol) {
	var names []string
	for n, v := range vols {
		if !rw || !v.snap {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	slices.Sort(names)
	n := names[rng.IntN(len(names))]
	return n, vols[n]
}

// block picks a block, often one at an interesting position.
func (m *model) block(nb uint64) uint64 {
	hot := []uint64{0, 1, 2, 255, 256, 257, 65535, 65536, nb - 1, nb - 2, nb / 2}
	if m.rng.IntN(3) > 0 {
		b := hot[m.rng.IntN(len(hot))]
		if b < nb {
			return b
		}
	}
	return m.rng.Uint64N(nb)
}

func (m *model) rangeIn(v *mvol, maxLen uint64) (uint64, uint64) {
	nb := (v.size + modelBS - 1) / modelBS
	off := m.block(nb)*modelBS + uint64(m.rng.IntN(modelBS))
	if off >= v.size {
		off = v.size - 1
	}
	n := 1 + m.rng.Uint64N(maxLen)
	return off, min(n, v.size-off)
}

func (m *model) create(size uint64) {
	name := m.newName()
	m.logf("create %s %d", name, size)
	if err := m.env.e.Create(m.ctx, name, size); err != nil {
		m.t.Fatalf("create %s: %v", name, err)
	}
	m.vols[name] = &mvol{size: size, blocks: make(map[uint64][]byte)}
}

// step runs one random operation, possibly with a fault injected.
func (m *model) step(step int) {
	ctx, e := m.ctx, m.env.e
	armed := false
	if m.faults && m.rng.IntN(20) == 0 {
		mode := faultstore.Crash
		switch m.rng.IntN(4) {
		case 0:
			mode = faultstore.Fail
		case 1:
			mode = faultstore.FailAfter
		}
		m.env.plan.Torn = m.rng.IntN(2) == 0
		m.env.plan.Arm(m.env.plan.Index()+int64(m.rng.IntN(8)), mode)
		armed = true
		defer func() { m.env.plan.Disarm() }() // also when no operation ran
	}
	r := m.rng.IntN(100)
	if len(m.vols) > 40 && r >= 55 && r < 69 {
		r = 70 // keep the population small: remove instead of adding
	}
	var (
		op     string
		err    error
		accept func() // reconciles the oracle after a fault
	)
	switch {
	case r < 40: // write
		name, v := m.pick(true)
		if v == nil {
			m.create(1 << 20)
			return
		}
		off, n := m.rangeIn(v, 3*modelBS)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(m.rng.IntN(255) + 1)
		}
		op = fmt.Sprintf("write %s %d %d", name, off, n)
		err = writeVol(ctx, e, m.env.dataStore(), name, off, p)
		old := v.read(off, n)
		if err == nil {
			v.write(off, p)
		}
		accept = func() {
			m.adopt(name, v, func(pos uint64, was, got byte) bool {
				if pos >= off && pos < off+n {
					return got == old[pos-off] || got == p[pos-off]
				}
				return got == was
			})
		}
	case r < 55: // read
		name, v := m.pick(false)
		off, n := m.rangeIn(v, 3*modelBS)
		op = fmt.Sprintf("read %s %d %d", name, off, n)
		got, err2 := readVol(ctx, e, m.env.dataStore(), name, off, n)
		if err = err2; err == nil && !bytes.Equal(got, v.read(off, n)) {
			m.t.Fatalf("step %d: %s: content differs from the oracle", step, op)
		}
		accept = func() {}
	case r < 62: // snapshot
		name, v := m.pick(true)
		if v == nil {
			return
		}
		snap := m.newName()
		op = fmt.Sprintf("snapshot %s %s", name, snap)
		err = e.Snapshot(ctx, name, snap)
		if err == nil {
			s := v.clone()
			s.snap = true
			m.vols[snap] = s
		}
		accept = func() { m.adoptNew(snap, v, true, v.size) }
	case r < 69: // clone
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
		if m.rng.IntN(2) == 0 {
			size += m.rng.Uint64N(min(pv.size*4, 4<<30)) + 1
		}
		name := m.newName()
		op = fmt.Sprintf("clone %s %s %d", parent, name, size)
		err = e.Clone(ctx, parent, name, size)
		if err == nil {
			c := pv.clone()
			c.snap, c.size = false, size
			m.vols[name] = c
		}
		accept = func() { m.adoptNew(name, pv, false, size) }
	case r < 73: // remove
		if len(m.vols) < 3 {
			return
		}
		name, v := m.pick(false)
		op = "remove " + name
		err = e.Remove(ctx, name)
		if err == nil {
			delete(m.vols, name)
		}
		accept = func() {
			if _, err := m.env.e.Info(ctx, name); errors.Is(err, errs.ErrNotFound) {
				delete(m.vols, name)
				return
			}
			m.vols[name] = v
			m.verify(name, v)
		}
	case r < 77: // rename
		name, v := m.pick(false)
		to := m.newName()
		op = fmt.Sprintf("rename %s %s", name, to)
		err = e.Rename(ctx, name, to)
		if err == nil {
			delete(m.vols, name)
			m.vols[to] = v
		}
		accept = func() {
			_, errOld := m.env.e.Info(ctx, name)
			_, errNew := m.env.e.Info(ctx, to)
			switch {
			case errOld == nil && errors.Is(errNew, errs.ErrNotFound):
				m.vols[name] = v
				delete(m.vols, to)
				m.verify(name, v)
			case errNew == nil && errors.Is(errOld, errs.ErrNotFound):
				m.vols[to] = v
				delete(m.vols, name)
				m.verify(to, v)
			default:
				m.t.Fatalf("after a fault in %s: old %v, new %v", op, errOld, errNew)
			}
		}
	case r < 83: // resize
		name, v := m.pick(true)
		if v == nil {
			return
		}
		size := v.size/2 + 1 + m.rng.Uint64N(v.size)
		if m.rng.IntN(3) == 0 {
			size = v.size + m.rng.Uint64N(1<<24)
		}
		op = fmt.Sprintf("resize %s %d", name, size)
		old := v.clone()
		err = e.Resize(ctx, name, size, true)
		if err == nil {
			v.resize(size)
		}
		accept = func() {
			in, err := m.env.e.Info(ctx, name)
			if err != nil {
				m.t.Fatalf("after a fault in %s: %v", op, err)
			}
			switch in.Size {
			case size:
				nv := old.clone()
				nv.resize(size)
				*v = *nv
			case old.size:
				*v = *old
			default:
				m.t.Fatalf("after a fault in %s: size %d", op, in.Size)
			}
			m.adopt(name, v, func(pos uint64, was, got byte) bool {
				return got == was || pos >= size && got == 0
			})
		}
	case r < 90: // trim
		name, v := m.pick(true)
		if v == nil {
			return
		}
		off, n := m.rangeIn(v, 4*modelBS)
		op = fmt.Sprintf("trim %s %d %d", name, off, n)
		b0, b1 := (off+modelBS-1)/modelBS, (off+n)/modelBS
		if off+n == v.size {
			b1 = (v.size + modelBS - 1) / modelBS
		}
		old := v.clone()
		err = e.Trim(ctx, name, off, n)
		if err == nil {
			v.trim(b0, b1)
		}
		accept = func() {
			*v = *old
			m.adopt(name, v, func(pos uint64, was, got byte) bool {
				b := pos / modelBS
				return got == was || b0 <= b && b < b1 && got == 0
			})
		}
	case r < 92:
		op = "restart"
		m.env.restart(m.t)
	case r < 93:
		op = "crash"
		m.env.crash(m.t)
	default: // full check of one volume
		name, v := m.pick(false)
		op = "verify " + name
		m.verify(name, v)
	}
	m.logf("%d: %s -> %v", step, op, err)
	if !armed {
		if err != nil {
			m.t.Fatalf("step %d: %s: %v", step, op, err)
		}
		return
	}
	plan := m.env.plan
	fired, crashed := plan.Fired(), plan.Crashed()
	plan.Disarm()
	if !fired {
		if err != nil {
			m.t.Fatalf("step %d: %s: %v (no fault fired)", step, op, err)
		}
		return
	}
	if crashed {
		m.logf("   crashed at store call %d", plan.Index())
		m.env.crash(m.t)
	} else {
		m.logf("   failed a store call")
	}
	if err != nil && accept != nil {
		accept()
	}
	m.verifyAll("after fault in " + op)
}

// adopt checks every byte of volume name against the oracle v with ok
// and then makes the oracle what the engine shows.
func (m *model) adopt(name string, v *mvol, ok func(pos uint64, was, got byte) bool) {
	m.t.Helper()
	for _, b := range m.blocksOf(name, v) {
		off := b * modelBS
		n := min(modelBS, v.size-off)
		got, err := readVol(m.ctx, m.env.e, m.env.dataStore(), name, off, n)
		if err != nil {
			m.t.Fatalf("adopt %s block %d: %v", name, b, err)
		}
		was := v.read(off, n)
		for i := range got {
			if !ok(off+uint64(i), was[i], got[i]) {
				m.t.Fatalf("volume %s byte %d is %#x; the oracle had %#x and the interrupted operation allows neither",
					name, off+uint64(i), got[i], was[i])
			}
		}
		if !bytes.Equal(got, was) {
			m.logf("   adopt %s block %d", name, b)
			blk := make([]byte, modelBS)
			copy(blk, got)
			if isZero(blk) {
				delete(v.blocks, b)
			} else {
				v.blocks[b] = blk
			}
		}
	}
}

// adoptNew settles whether a volume being made from src exists.
func (m *model) adoptNew(name string, src *mvol, snap bool, size uint64) {
	in, err := m.env.e.Info(m.ctx, name)
	if errors.Is(err, errs.ErrNotFound) {
		delete(m.vols, name)
		return
	}
	if err != nil {
		m.t.Fatalf("info %s: %v", name, err)
	}
	if in.ReadOnly != snap || in.Size != size {
		m.t.Fatalf("%s after a fault: %+v", name, in)
	}
	nv := src.clone()
	nv.snap, nv.size = snap, size
	m.vols[name] = nv
}

// blocksOf lists the blocks worth comparing: those the oracle has and
// those the engine has allocated.
func (m *model) blocksOf(name string, v *mvol) []uint64 {
	ext, err := m.env.e.Allocated(m.ctx, name, 0, v.size)
	if err != nil {
		m.t.Fatalf("allocated %s: %v", name, err)
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
	return slices.Sorted(maps.Keys(set))
}

// verify compares volume name with its oracle completely.
func (m *model) verify(name string, v *mvol) {
	m.t.Helper()
	in, err := m.env.e.Info(m.ctx, name)
	if err != nil {
		m.t.Fatalf("info %s: %v", name, err)
	}
	if in.Size != v.size || in.ReadOnly != v.snap {
		m.t.Fatalf("info %s = %+v, oracle size %d snapshot %v", name, in, v.size, v.snap)
	}
	for _, b := range m.blocksOf(name, v) {
		off := b * modelBS
		n := min(modelBS, v.size-off)
		got, err := readVol(m.ctx, m.env.e, m.env.dataStore(), name, off, n)
		if err != nil {
			m.t.Fatalf("read %s block %d: %v", name, b, err)
		}
		if !bytes.Equal(got, v.read(off, n)) {
			m.t.Fatalf("volume %s block %d differs from the oracle:\n got %s\nwant %s",
				name, b, runs(got), runs(v.read(off, n)))
		}
	}
	// A random unallocated-looking range must read as zeros too.
	off, n := m.rangeIn(v, 8*modelBS)
	got, err := readVol(m.ctx, m.env.e, m.env.dataStore(), name, off, n)
	if err != nil || !bytes.Equal(got, v.read(off, n)) {
		m.t.Fatalf("volume %s range %d+%d differs from the oracle (%v)", name, off, n, err)
	}
}

func (m *model) verifyAll(why string) {
	m.t.Helper()
	var names []string
	if err := m.env.e.List(m.ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		m.t.Fatalf("%s: list: %v", why, err)
	}
	if want := slices.Sorted(maps.Keys(m.vols)); !slices.Equal(names, want) {
		m.t.Fatalf("%s: volumes %q, oracle %q", why, names, want)
	}
	for _, n := range names {
		m.verify(n, m.vols[n])
	}
	checkInvariants(m.t, m.env)
}
