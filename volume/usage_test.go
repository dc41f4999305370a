package volume

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// The usage model: what the test wrote, as objects, by the rules of
// docs/maps.md (a volume writes in place what it created since its last
// snapshot and copies the rest, a block's object and the pages on its
// path alike; a copy of an object is as long as the source, a write
// makes it at least as long as the write's end in the block; snapshot
// and clone share everything; remove of a volume deletes what it owns).
// Usage's figures are checked against sums over these objects.

// usagePageSize is the size of a map page object: two 4160-byte slots
// (docs/maps.md, "Formats").
const usagePageSize = 2 * 4160

type mObj struct {
	page bool
	size int64 // -1: mapped, never written
	live bool  // in the store
}

type mVol struct {
	size     uint64
	snapshot bool
	parent   string
	blocks   map[uint64]*mObj
	pages    map[pageKey]*mObj
	owned    map[*mObj]bool
}

type usageModel struct {
	bs   uint64
	vols map[string]*mVol
	objs []*mObj // every object ever made
}

func (m *usageModel) obj(page bool, size int64) *mObj {
	o := &mObj{page: page, size: size, live: size >= 0}
	m.objs = append(m.objs, o)
	return o
}

// levels is the tree height of a volume of size bytes: the smallest
// h >= 1 with 256^h >= its blocks.
func (m *usageModel) levels(size uint64) int {
	n := (size + m.bs - 1) / m.bs
	h := 1
	for uint64(1)<<(8*h) < n {
		h++
	}
	return h
}

func (m *usageModel) create(name string, size uint64) {
	m.vols[name] = &mVol{size: size, blocks: map[uint64]*mObj{}, pages: map[pageKey]*mObj{}, owned: map[*mObj]bool{}}
}

// path makes the pages above block b v's own (copies of the shared ones,
// or new ones).
func (m *usageModel) path(v *mVol, b uint64) {
	for l := range m.levels(v.size) {
		k := pageKey{uint8(l), b >> (8 * (l + 1))}
		if p := v.pages[k]; p == nil || !v.owned[p] {
			p = m.obj(true, usagePageSize)
			v.pages[k], v.owned[p] = p, true
		}
	}
}

func (m *usageModel) write(name string, off, n uint64) {
	v := m.vols[name]
	for b := off / m.bs; b <= (off+n-1)/m.bs; b++ {
		end := int64(min(off+n, (b+1)*m.bs) - b*m.bs)
		m.path(v, b)
		switch o := v.blocks[b]; {
		case o == nil:
			o = m.obj(false, end)
			v.blocks[b], v.owned[o] = o, true
		case !v.owned[o]:
			o = m.obj(false, max(o.size, end))
			v.blocks[b], v.owned[o] = o, true
		default:
			o.size = max(o.size, end)
		}
	}
}

// mapOnly maps block b for writing, and nothing writes it.
func (m *usageModel) mapOnly(name string, b uint64) {
	v := m.vols[name]
	m.path(v, b)
	o := m.obj(false, -1)
	v.blocks[b], v.owned[o] = o, true
}

func (m *usageModel) share(name, to string, snapshot bool, size uint64) {
	v := m.vols[name]
	if m.levels(size) != m.levels(v.size) {
		panic("the model does not grow trees")
	}
	m.vols[to] = &mVol{size: size, snapshot: snapshot, parent: name,
		blocks: maps_clone(v.blocks), pages: maps_clone(v.pages), owned: map[*mObj]bool{}}
	if snapshot {
		v.owned = map[*mObj]bool{}
	}
}

func maps_clone[K comparable](m map[K]*mObj) map[K]*mObj {
	c := make(map[K]*mObj, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (m *usageModel) remove(name string) {
	v := m.vols[name]
	if !v.snapshot {
		for o := range v.owned {
			o.live = false
		}
	}
	delete(m.vols, name)
}

// reached is every object of v's map.
func (v *mVol) reached() []*mObj {
	var out []*mObj
	for _, o := range v.blocks {
		out = append(out, o)
	}
	for _, o := range v.pages {
		out = append(out, o)
	}
	return out
}

// expect is the report the model predicts; Held.Other is the caller's.
func (m *usageModel) expect() UsageReport {
	refs := make(map[*mObj]int)
	for _, v := range m.vols {
		for _, o := range v.reached() {
			refs[o]++
		}
	}
	add := func(data, mp *Share, missing *uint64, o *mObj) {
		switch {
		case o.size < 0:
			*missing++
		case o.page:
			mp.add(o.size, refs[o] > 1)
		default:
			data.add(o.size, refs[o] > 1)
		}
	}
	rep := UsageReport{Volumes: []VolumeUsage{}}
	names := make([]string, 0, len(m.vols))
	for n := range m.vols {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		v := m.vols[n]
		vu := VolumeUsage{Name: n, Snapshot: v.snapshot, Parent: v.parent, Provisioned: v.size, BlockSize: uint32(m.bs)}
		for _, o := range v.reached() {
			add(&vu.Data, &vu.Map, &vu.Missing, o)
		}
		rep.Volumes = append(rep.Volumes, vu)
		if v.snapshot {
			rep.Pool.Snapshots++
		} else {
			rep.Pool.Volumes++
			rep.Pool.Provisioned += v.size
		}
	}
	for o := range refs {
		add(&rep.Pool.Data, &rep.Pool.Map, &rep.Pool.Missing, o)
	}
	h := &Held{}
	for _, o := range m.objs {
		if !o.live {
			continue
		}
		c, u := &h.Data, &h.UnreachableData
		if o.page {
			c, u = &h.Map, &h.UnreachableMap
		}
		c.add(o.size)
		if refs[o] == 0 {
			u.add(o.size)
		}
	}
	rep.Pool.Held = h
	return rep
}

// countReads counts the reads of a store.
type countReads struct {
	store.Store
	n atomic.Int64
}

func (c *countReads) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	c.n.Add(1)
	return c.Store.ReadAt(ctx, name, p, off)
}

var (
	pageForm = regexp.MustCompile(`_[0-9a-f]{16}_m[0-9]_[0-9a-f]{16}$`)
	dataForm = regexp.MustCompile(`_[0-9a-f]{16}_[0-9a-f]{16}$`)
)

// otherHeld lists the maps store by itself: the bytes of everything but
// map pages (headers, epoch records, markers).
func otherHeld(t *testing.T, maps store.Store) Count {
	t.Helper()
	ctx := context.Background()
	var c Count
	err := maps.List(ctx, "", func(name string) error {
		if pageForm.MatchString(name) {
			return nil
		}
		n, err := maps.Stat(ctx, name)
		c.add(n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dirHeld sums the files of a filestore directory (its AA/BB object
// directories: docs of package filestore): those whose names match form
// in objs, the rest in other.
func dirHeld(t *testing.T, dir string, form *regexp.Regexp) (objs, other Count) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && path != dir && (d.Name() == "tmp" || d.Name() == "locks") {
				return filepath.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == "FORMAT" {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if form.MatchString(d.Name()) {
			objs.add(fi.Size())
		} else {
			other.add(fi.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs, other
}

// TestUsageExact writes known blocks into volumes, snapshots, clones,
// maps a block nothing writes, leaves orphans and removes volumes, and
// checks after each step every figure of Usage against the model of what
// was written, and what it says the stores hold against the stores (on
// files: the files of the directories). Usage never reads a data object.
func TestUsageExact(t *testing.T) {
	for _, backend := range []string{"memstore", "filestore"} {
		t.Run(backend, func(t *testing.T) { testUsageExact(t, backend) })
	}
}

func testUsageExact(t *testing.T, backend string) {
	ctx := context.Background()
	const bs = 64 << 10
	var maps, data store.Store
	dir := t.TempDir()
	switch backend {
	case "memstore":
		maps, data = memstore.New(), memstore.New()
	default:
		fm, err := filestore.Open(filestore.Options{Dir: dir + "/maps"})
		if err != nil {
			t.Fatal(err)
		}
		fd, err := filestore.Open(filestore.Options{Dir: dir + "/data"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fm.Close(); fd.Close() })
		maps, data = fm, fd
	}
	counted := &countReads{Store: data}
	e, err := New(maps, counted, Options{Owner: "host-a", BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	m := &usageModel{bs: bs, vols: map[string]*mVol{}}
	seed := byte(1)
	write := func(name string, off, n uint64) {
		t.Helper()
		seed++
		if err := writeVol(ctx, e, counted, name, off, testutil.Pattern(int(n), seed)); err != nil {
			t.Fatalf("write %s at %d: %v", name, off, err)
		}
		m.write(name, off, n)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string) *UsageReport {
		t.Helper()
		counted.n.Store(0)
		rep, err := e.Usage(ctx, nil, UsageOptions{Held: true})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if n := counted.n.Load(); n != 0 {
			t.Errorf("%s: Usage read the data store %d times", step, n)
		}
		want := m.expect()
		want.Pool.Held.Other = otherHeld(t, maps)
		if !reflect.DeepEqual(rep.Volumes, want.Volumes) {
			t.Errorf("%s: volumes\n got %+v\nwant %+v", step, rep.Volumes, want.Volumes)
		}
		got := rep.Pool
		got.Held, want.Pool.Held = nil, nil
		if !reflect.DeepEqual(got, want.Pool) {
			t.Errorf("%s: pool\n got %+v\nwant %+v", step, got, want.Pool)
		}
		if rep.Pool.Held == nil || !reflect.DeepEqual(*rep.Pool.Held, *m.expectHeld(t, maps)) {
			t.Errorf("%s: held\n got %+v\nwant %+v", step, rep.Pool.Held, m.expectHeld(t, maps))
		}
		if backend == "filestore" {
			dp, do := dirHeld(t, dir+"/data", dataForm)
			mp, mo := dirHeld(t, dir+"/maps", pageForm)
			h := rep.Pool.Held
			if dp != h.Data || do != (Count{}) || mp != h.Map || mo != h.Other {
				t.Errorf("%s: the directories hold data %+v (and %+v), map pages %+v, other %+v; Usage says %+v",
					step, dp, do, mp, mo, *h)
			}
		}
		return rep
	}
	byName := func(rep *UsageReport, name string) VolumeUsage {
		for _, v := range rep.Volumes {
			if v.Name == name {
				return v
			}
		}
		t.Fatalf("%s not in the report", name)
		return VolumeUsage{}
	}

	check("empty pool")

	// A volume of two tree levels (512 blocks): full and partial blocks,
	// in two leaves.
	must(e.Create(ctx, "vm", 512*bs))
	m.create("vm", 512*bs)
	check("empty volume")
	write("vm", 0, bs)
	write("vm", bs+100, 1000)
	write("vm", 300*bs, 5000)
	write("vm", 5*bs, 2*bs)
	check("volume written")

	// A snapshot shares everything; the volume's next writes copy.
	must(e.Snapshot(ctx, "vm", "vm-snap"))
	m.share("vm", "vm-snap", true, 512*bs)
	check("snapshot")
	write("vm", bs, bs)
	write("vm", 10*bs+7, 10)
	check("volume written after the snapshot")

	// A larger clone of the snapshot (same tree height), written.
	must(e.Clone(ctx, "vm-snap", "vm-clone", 768*bs))
	m.share("vm-snap", "vm-clone", false, 768*bs)
	write("vm-clone", 5*bs, 10)
	write("vm-clone", 600*bs, 3000)
	check("clone written")

	// A second family, one tree level.
	must(e.Create(ctx, "other", 16*bs))
	m.create("other", 16*bs)
	write("other", 0, bs)
	write("other", 3*bs, 2000)
	must(e.Snapshot(ctx, "other", "other-snap"))
	m.share("other", "other-snap", true, 16*bs)
	write("other", 0, bs)
	check("second family")

	// A block mapped whose data never came.
	if _, err := e.MapWrite(ctx, "vm", 20*bs, bs); err != nil {
		t.Fatal(err)
	}
	m.mapOnly("vm", 20)
	check("mapped, never written")

	// Orphans (as a crash leaves them): a data object and a torn page.
	must(counted.WriteAt(ctx, DataObject("vm", 0xff, 3), make([]byte, 777), 0, true))
	m.obj(false, 777)
	must(maps.WriteAt(ctx, pageObject("vm", 0xff, pageKey{0, 0}), make([]byte, 100), 0, true))
	m.obj(true, 100)
	before := check("orphans")
	// A snapshot named alone still shares with its origin and its clone.
	if one, err := e.Usage(ctx, []string{"vm-snap"}, UsageOptions{}); err != nil ||
		len(one.Volumes) != 1 || !reflect.DeepEqual(one.Volumes[0], byName(before, "vm-snap")) {
		t.Errorf("Usage of vm-snap alone: %+v, %v; in the whole report: %+v", one, err, byName(before, "vm-snap"))
	}

	// A snapshot's exclusive objects are garbage once it is removed: the
	// unreachable bytes grow by them exactly.
	snap := byName(before, "other-snap")
	if snap.Data.ExclusiveObjects == 0 {
		t.Fatal("other-snap holds nothing alone: the test would prove nothing")
	}
	must(e.Remove(ctx, "other-snap"))
	m.remove("other-snap")
	after := check("snapshot removed")
	bh, ah := before.Pool.Held, after.Pool.Held
	if ah.UnreachableData.Bytes-bh.UnreachableData.Bytes != snap.Data.ExclusiveBytes ||
		ah.UnreachableMap.Bytes-bh.UnreachableMap.Bytes != snap.Map.ExclusiveBytes {
		t.Errorf("removing other-snap made %d data and %d map bytes unreachable; its exclusive bytes were %d and %d",
			ah.UnreachableData.Bytes-bh.UnreachableData.Bytes, ah.UnreachableMap.Bytes-bh.UnreachableMap.Bytes,
			snap.Data.ExclusiveBytes, snap.Map.ExclusiveBytes)
	}

	// A clone's exclusive objects go with it.
	clone := byName(after, "vm-clone")
	must(e.Remove(ctx, "vm-clone"))
	m.remove("vm-clone")
	gone := check("clone removed")
	if after.Pool.Data.Bytes-gone.Pool.Data.Bytes != clone.Data.ExclusiveBytes ||
		after.Pool.Held.Data.Bytes-gone.Pool.Held.Data.Bytes != clone.Data.ExclusiveBytes {
		t.Errorf("removing vm-clone freed %d bytes reachable, %d held; its exclusive bytes were %d",
			after.Pool.Data.Bytes-gone.Pool.Data.Bytes, after.Pool.Held.Data.Bytes-gone.Pool.Held.Data.Bytes,
			clone.Data.ExclusiveBytes)
	}

	// Names restrict the report, not the sharing.
	some, err := e.Usage(ctx, []string{"vm-snap", "vm", "vm-snap"}, UsageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(some.Volumes) != 2 || !reflect.DeepEqual(some.Volumes[0], byName(gone, "vm-snap")) ||
		!reflect.DeepEqual(some.Volumes[1], byName(gone, "vm")) {
		t.Errorf("Usage of vm-snap, vm: %+v", some.Volumes)
	}
	gp := gone.Pool
	gp.Held = nil
	if !reflect.DeepEqual(some.Pool, gp) {
		t.Errorf("pool of a restricted report %+v, of the whole %+v", some.Pool, gp)
	}
	if _, err := e.Usage(ctx, []string{"vm", "nope"}, UsageOptions{}); !errors.Is(err, errs.ErrNotFound) || !regexp.MustCompile(`"nope"`).MatchString(err.Error()) {
		t.Errorf("Usage of a missing volume: %v", err)
	}
	if _, err := e.Usage(ctx, []string{"a/b"}, UsageOptions{}); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("Usage of a bad name: %v", err)
	}
}

// expectHeld is the model's Held, with Other listed from the maps store.
func (m *usageModel) expectHeld(t *testing.T, maps store.Store) *Held {
	h := m.expect().Pool.Held
	h.Other = otherHeld(t, maps)
	return h
}

// TestUsageFailsOnUnreadablePage: a page that cannot be read fails the
// report, naming it (the figures would be wrong without it).
func TestUsageFailsOnUnreadablePage(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, 64<<10)
	if err := v.e.Create(ctx, "vm", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, v.e, v.dataStore(), "vm", 0, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	var page string
	v.maps.List(ctx, "", func(n string) error {
		if pageForm.MatchString(n) {
			page = n
		}
		return nil
	})
	if err := v.maps.Delete(ctx, page); err != nil {
		t.Fatal(err)
	}
	_, err := v.e.Usage(ctx, nil, UsageOptions{})
	if !errors.Is(err, errs.ErrCorrupt) || !regexp.MustCompile(regexp.QuoteMeta(page)).MatchString(err.Error()) {
		t.Errorf("Usage with page %s deleted: %v", page, err)
	}
}

// hookMaps is a maps store that calls hook once, before the first read
// of an object whose name starts with prefix, once armed.
type hookMaps struct {
	*memstore.Store
	armed  atomic.Bool
	prefix string
	hook   func()
}

func (h *hookMaps) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if len(name) > len(h.prefix) && name[:len(h.prefix)] == h.prefix && h.armed.CompareAndSwap(true, false) {
		h.hook()
	}
	return h.Store.ReadAt(ctx, name, p, off)
}

// TestUsageVolumeRemovedDuringWalk: a volume removed while Usage walks
// its map (its pages deleted under the walk) is left out of the report,
// which is then what Usage says afterwards; it does not fail.
func TestUsageVolumeRemovedDuringWalk(t *testing.T) {
	ctx := context.Background()
	const bs = 64 << 10
	maps := &hookMaps{Store: memstore.New(), prefix: "b_"}
	data := memstore.New()
	e, err := New(maps, data, Options{Owner: "host-a", BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := e.Create(ctx, n, 16*bs); err != nil {
			t.Fatal(err)
		}
		if err := writeVol(ctx, e, data, n, 0, make([]byte, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Snapshot(ctx, "b", "b-snap"); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, e, data, "b", bs, make([]byte, 100)); err != nil { // b's own page
		t.Fatal(err)
	}
	removed := false
	maps.hook = func() {
		if err := e.Remove(ctx, "b"); err != nil {
			t.Errorf("remove b during the walk: %v", err)
		}
		removed = true
	}
	maps.armed.Store(true)
	during, err := e.Usage(ctx, nil, UsageOptions{Held: true})
	if err != nil {
		t.Fatalf("Usage while b is removed: %v", err)
	}
	if !removed {
		t.Fatal("the walk never read b's map: the test proves nothing")
	}
	after, err := e.Usage(ctx, nil, UsageOptions{Held: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(during, after) || len(after.Volumes) != 2 {
		t.Errorf("Usage during the removal of b\n%+v\nafter\n%+v", during, after)
	}
}
