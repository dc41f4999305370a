package volume

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// UsageOptions shape Usage.
type UsageOptions struct {
	// Held: also list both stores and take the size of every map page
	// and data object they hold, so that the report says what the
	// backend holds and which part of it no header reaches (what a
	// collector would free). Costs a listing of each store and a Stat of
	// every object no header reaches.
	Held bool
}

// Share is the space of a set of objects (data objects, or map pages),
// in objects and bytes (their sizes in the store), split into the
// objects no other header reaches (exclusive) and the others (shared).
// For the pool, exclusive objects are those exactly one header reaches,
// shared those two or more reach (each counted once).
type Share struct {
	Objects          uint64 `json:"objects"`
	Bytes            uint64 `json:"bytes"`
	ExclusiveObjects uint64 `json:"exclusive_objects"`
	ExclusiveBytes   uint64 `json:"exclusive_bytes"`
	SharedObjects    uint64 `json:"shared_objects"`
	SharedBytes      uint64 `json:"shared_bytes"`
}

func (s *Share) add(size int64, shared bool) {
	s.Objects++
	s.Bytes += uint64(size)
	if shared {
		s.SharedObjects++
		s.SharedBytes += uint64(size)
	} else {
		s.ExclusiveObjects++
		s.ExclusiveBytes += uint64(size)
	}
}

// Count is a number of objects and their bytes.
type Count struct {
	Objects uint64 `json:"objects"`
	Bytes   uint64 `json:"bytes"`
}

func (c *Count) add(size int64) { c.Objects++; c.Bytes += uint64(size) }

// VolumeUsage is the space of one volume or snapshot.
type VolumeUsage struct {
	Name     string `json:"name"`
	Snapshot bool   `json:"snapshot"`
	// Parent: the snapshot a clone came from, the volume a snapshot was
	// taken of ("" if none).
	Parent string `json:"parent"`
	// Provisioned is the volume's size.
	Provisioned uint64 `json:"provisioned"`
	BlockSize   uint32 `json:"block_size"`
	// Data: the data objects its map reaches (Bytes: the bytes mapped),
	// those it alone reaches (what removing it would free, once
	// collected) and those other headers reach too (its parent, its
	// snapshots, their clones).
	Data Share `json:"data"`
	// Map: the same for the map pages its map is made of (metadata).
	Map Share `json:"map"`
	// Missing: data objects its map names that do not exist (a write of
	// a zero block whose data never came: it reads as zeros). They count
	// in no other figure.
	Missing uint64 `json:"missing"`
}

// PoolUsage is the space of the whole pool.
type PoolUsage struct {
	Volumes   int `json:"volumes"`
	Snapshots int `json:"snapshots"`
	// Provisioned is the sum of the volumes' sizes (snapshots not
	// counted: they are never written).
	Provisioned uint64 `json:"provisioned"`
	// Data and Map: every data object and map page some header reaches,
	// each counted once.
	Data    Share  `json:"data"`
	Map     Share  `json:"map"`
	Missing uint64 `json:"missing"`
	// Held is what the stores hold (UsageOptions.Held), nil if not asked.
	Held *Held `json:"held,omitempty"`
}

// Held is what the stores hold, found by listing them.
type Held struct {
	Data Count `json:"data"` // the data objects of the data store
	Map  Count `json:"map"`  // the map pages of the maps store
	// Other: every other object: headers, epoch records, root markers
	// (and anything not a data object in the data store).
	Other Count `json:"other"`
	// UnreachableData and UnreachableMap: the data objects and map
	// pages held that no header reaches (garbage a collection frees;
	// on a live pool, also objects written since the walk).
	UnreachableData Count `json:"unreachable_data"`
	UnreachableMap  Count `json:"unreachable_map"`
}

// UsageReport is what Usage finds.
type UsageReport struct {
	// Volumes: the volumes and snapshots asked for, in the order asked
	// (all of them in name order if none was named).
	Volumes []VolumeUsage `json:"volumes"`
	Pool    PoolUsage     `json:"pool"`
}

// usageWorkers is how many Stat calls Usage keeps in flight.
const usageWorkers = 16

// usageObj is one object some header reaches.
type usageObj struct {
	name    string
	page    bool
	size    int64 // -1: missing
	headers int32 // how many headers reach it
	last    int32 // the last header that reached it
}

// Usage reports, exactly, the space of the volumes and snapshots named
// (all if names is nil) and of the pool, from the maps: it never reads
// data.
//
// Exact means: every figure is a sum of object sizes as the store
// reports them (Stat), over the sets of objects the maps reach, not an
// estimate from block counts. Bytes mapped are the sizes of the data
// objects a volume's map reaches (an object holds up to a block; one
// written in part, or cut by a shrink, is smaller); map pages are counted
// apart (Map). A volume's exclusive bytes are those of the objects it
// reaches and no other header of the pool does (what removing it would
// free, once a collector has run); its shared bytes are the rest. So the
// sharing is computed over every header of the pool, whatever names
// restricts the report to.
//
// Cost: one read of every header, one walk of every map (pages shared
// between snapshots are read once while they fit the engine's page
// cache), and one Stat per distinct page and data object reached; memory
// for every distinct object (about 100 bytes) and 4 bytes per object and
// header reaching it. With opts.Held, a listing of both stores and one
// Stat per object no header reaches.
//
// It takes no lock and runs beside I/O: each map is read as it is when
// walked, so on a pool that changes meanwhile the figures mix moments (an
// object written after the walk counts as unreachable). A volume removed
// during its walk (its pages deleted under it) is left out; one whose
// header changed is walked again as it is now. Otherwise a header or page
// that cannot be read fails the whole report (the exclusive figures would
// be wrong without it), naming the volume and object.
func (e *Engine) Usage(ctx context.Context, names []string, opts UsageOptions) (*UsageReport, error) {
	rep, err := e.usage(ctx, names, opts)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return rep, nil
}

func (e *Engine) usage(ctx context.Context, names []string, opts UsageOptions) (*UsageReport, error) {
	for _, n := range names {
		if err := ValidName(n); err != nil {
			return nil, err
		}
	}
	var all []string
	if err := e.List(ctx, func(n string) error { all = append(all, n); return nil }); err != nil {
		return nil, err
	}
	type hdr struct {
		name string
		h    *header
		objs []int32
	}
	var hs []hdr
	for _, n := range all {
		h, err := e.readHeader(ctx, n)
		if errors.Is(err, errs.ErrNotFound) {
			continue // removed or renamed since the listing
		}
		if err != nil {
			return nil, err
		}
		hs = append(hs, hdr{name: n, h: h})
	}

	// One walk of every map.
	var objs []usageObj
	ids := make(map[string]int32)
	type seen struct {
		name string
		page bool
	}
	live := hs[:0]
	for _, x := range hs {
		var got []seen
		gone := false
		for try := 0; ; try++ {
			got = got[:0]
			err := e.reach(ctx, x.name, x.h, func(o reached) error {
				got = append(got, seen{o.name, o.page})
				return nil
			})
			if err == nil {
				break
			}
			// A volume removed, trimmed or shrunk during its walk loses
			// pages: walk its header as it is now, if it still is.
			h, err2 := e.readHeader(ctx, x.name)
			switch {
			case errors.Is(err2, errs.ErrNotFound):
				gone = true
			case err2 == nil && try < 3 && (h.id != x.h.id || h.seq != x.h.seq):
				x.h = h
				continue
			default:
				return nil, err
			}
			break
		}
		if gone {
			continue
		}
		hi := int32(len(live))
		for _, o := range got {
			id, ok := ids[o.name]
			if !ok {
				id = int32(len(objs))
				ids[o.name] = id
				objs = append(objs, usageObj{name: o.name, page: o.page, last: -1})
			}
			u := &objs[id]
			if u.last == hi {
				continue
			}
			u.last = hi
			u.headers++
			x.objs = append(x.objs, id)
		}
		live = append(live, x)
	}
	hs = live

	// One Stat per distinct object.
	err := inParallel(ctx, len(objs), usageWorkers, func(i int) error {
		st := e.data
		if objs[i].page {
			st = e.maps
		}
		n, err := st.Stat(ctx, objs[i].name)
		switch {
		case err == nil:
			objs[i].size = n
		case errors.Is(err, errs.ErrNotFound):
			// A data object: mapped, never written. A page (read by
			// the walk): deleted since (its volume trimmed, shrunk or
			// removed), counted nowhere.
			objs[i].size = -1
		default:
			return fmt.Errorf("object %q: %w", objs[i].name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	rep := &UsageReport{}
	byName := make(map[string]int, len(hs))
	vols := make([]VolumeUsage, len(hs))
	for i, x := range hs {
		byName[x.name] = i
		v := VolumeUsage{Name: x.name, Snapshot: x.h.snapshot(), Parent: x.h.parent,
			Provisioned: x.h.size, BlockSize: x.h.blockSize}
		for _, id := range x.objs {
			u := &objs[id]
			switch {
			case u.size < 0 && u.page:
			case u.size < 0:
				v.Missing++
			case u.page:
				v.Map.add(u.size, u.headers > 1)
			default:
				v.Data.add(u.size, u.headers > 1)
			}
		}
		vols[i] = v
		if v.Snapshot {
			rep.Pool.Snapshots++
		} else {
			rep.Pool.Volumes++
			rep.Pool.Provisioned += v.Provisioned
		}
	}
	for i := range objs {
		u := &objs[i]
		switch {
		case u.size < 0 && u.page:
		case u.size < 0:
			rep.Pool.Missing++
		case u.page:
			rep.Pool.Map.add(u.size, u.headers > 1)
		default:
			rep.Pool.Data.add(u.size, u.headers > 1)
		}
	}
	if names == nil {
		rep.Volumes = vols
	} else {
		rep.Volumes = []VolumeUsage{}
		seen := make(map[string]bool)
		for _, n := range names {
			i, ok := byName[n]
			if !ok {
				return nil, notFound(n)
			}
			if !seen[n] {
				seen[n] = true
				rep.Volumes = append(rep.Volumes, vols[i])
			}
		}
	}
	if opts.Held {
		held, err := e.held(ctx, ids, objs)
		if err != nil {
			return nil, err
		}
		rep.Pool.Held = held
	}
	return rep, nil
}

// held lists both stores and sizes what they hold; ids and objs are the
// objects the headers reach, with their sizes.
func (e *Engine) held(ctx context.Context, ids map[string]int32, objs []usageObj) (*Held, error) {
	type item struct {
		name      string
		maps      bool
		what      int // 0 data object, 1 map page, 2 other
		reachable bool
		size      int64
	}
	var items []item
	stores := []struct {
		s    store.Store
		maps bool
		what string
	}{{e.data, false, "data store"}, {e.maps, true, "maps store"}}
	one := e.data == e.maps // one store holds both: list it once
	if one {
		stores = stores[1:]
	}
	for _, st := range stores {
		err := st.s.List(ctx, "", func(name string) error {
			it := item{name: name, maps: st.maps, what: 2, size: -1}
			if o, ok := parseObjectName(name); ok && (one || o.page == st.maps) {
				it.what = 0
				if o.page {
					it.what = 1
				}
				if id, ok := ids[name]; ok {
					it.reachable = true
					it.size = objs[id].size
				}
			}
			items = append(items, it)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list the %s: %w", st.what, err)
		}
	}
	err := inParallel(ctx, len(items), usageWorkers, func(i int) error {
		it := &items[i]
		if it.size >= 0 {
			return nil
		}
		st := e.data
		if it.maps {
			st = e.maps
		}
		n, err := st.Stat(ctx, it.name)
		switch {
		case err == nil:
			it.size = n
		case errors.Is(err, errs.ErrNotFound):
			it.size = -1 // deleted since the listing
		default:
			return fmt.Errorf("object %q: %w", it.name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	h := &Held{}
	for _, it := range items {
		if it.size < 0 {
			continue
		}
		switch it.what {
		case 0:
			h.Data.add(it.size)
			if !it.reachable {
				h.UnreachableData.add(it.size)
			}
		case 1:
			h.Map.add(it.size)
			if !it.reachable {
				h.UnreachableMap.add(it.size)
			}
		default:
			h.Other.add(it.size)
		}
	}
	return h, nil
}

// inParallel calls fn(i) for i in [0, n) from (at most) workers
// goroutines and returns the first error (the others stop early): the
// Stat calls of Usage and of a check.
func inParallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}
