package e2e_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// vlmc du through the real programs, two hosts on one storage: the
// figures of volumes written with known blocks, and the pool's totals
// against what the storage holds, counted by hand (the files of the
// directories here, `rados ls` and `rados stat` in du_ceph_test.go).

// duObjects counts the objects of one store: data objects (of the data
// store) or map pages (of the maps store), and everything else.
type duObjects struct {
	objs, other volclient.UsageCount
}

// duStorage lists a pool's stores by hand.
type duStorage struct {
	data, maps func(t *testing.T) map[string]int64 // object name -> size
}

// The object forms of docs/maps.md.
var (
	duDataForm = regexp.MustCompile(`_[0-9a-f]{16}_[0-9a-f]{16}$`)
	duPageForm = regexp.MustCompile(`_[0-9a-f]{16}_m[0-9]_[0-9a-f]{16}$`)
)

func duCount(objs map[string]int64, form *regexp.Regexp) duObjects {
	var c duObjects
	for n, s := range objs {
		x := &c.other
		if form.MatchString(n) {
			x = &c.objs
		}
		x.Objects++
		x.Bytes += uint64(s)
	}
	return c
}

// duListDir lists the objects of a filestore directory: the files of
// its AA/BB directories (store/filestore/layout.go), not its tmp and
// locks directories nor FORMAT.
func duListDir(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && path != dir && (d.Name() == "locks" || d.Name() == "tmp"):
			return filepath.SkipDir
		case d.IsDir() || filepath.Dir(path) == dir:
			return nil // FORMAT and the like
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[d.Name()] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	return out
}

func TestDuSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	o := e2etest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"}
	duTwoHosts(t, o, duStorage{
		data: func(t *testing.T) map[string]int64 { return duListDir(t, o.DataDir) },
		maps: func(t *testing.T) map[string]int64 { return duListDir(t, o.MapDir) },
	})
}

// du runs vlmc du --json with args on e.
func du(t *testing.T, e *e2etest.Env, args ...string) volclient.UsageReport {
	t.Helper()
	out := e.Must("vlmc", append([]string{"du", "--json"}, args...)...)
	var r volclient.UsageReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("vlmc du --json %v: %v\n%s", args, err, out)
	}
	return r
}

func duTwoHosts(t *testing.T, o e2etest.Options, st duStorage) {
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, o)
	a.Start()
	b.Start()
	const (
		K   = 1 << 10
		M   = 1 << 20
		blk = 4 * M // the default block size
	)
	qemu := func(e *e2etest.Env, vol string, cmds ...string) {
		t.Helper()
		if err := testutil.QemuIO(t, e.URI(vol), cmds...); err != nil {
			t.Fatalf("qemu-io %s %v: %v", vol, cmds, err)
		}
	}
	// vm on A: block 0 whole, block 1 from 4096 to 12288 (an object of
	// 12 KiB), 1 MiB at the start of block 5.
	a.Must("vlmc", "create", "vm", "--size", "64M")
	qemu(a, "vm", "write -P 1 0 4M", "write -P 2 4100K 8K", "write -P 3 20M 1M")
	a.Must("vlmc", "snapshot", "vm", "vm-snap")
	qemu(a, "vm", "write -P 4 0 64K") // copies block 0 (4 MiB)
	// A clone on B: a new block 2 (4 KiB), block 1 copied (12 KiB).
	b.Must("vlmc", "create", "vm-clone", "--snap", "vm-snap", "--size", "128M")
	qemu(b, "vm-clone", "write -P 5 8M 4K", "write -P 6 4M 4K")
	// Garbage: tmp's snapshot held block 0's first version alone.
	b.Must("vlmc", "create", "tmp", "--size", "16M")
	qemu(b, "tmp", "write -P 7 0 2M")
	b.Must("vlmc", "snapshot", "tmp", "tmp-snap")
	qemu(b, "tmp", "write -P 8 0 1M")
	b.Must("vlmc", "remove", "tmp-snap")

	share := func(excl, shared uint64) volclient.UsageShare {
		return volclient.UsageShare{Bytes: excl + shared, ExclusiveBytes: excl, SharedBytes: shared}
	}
	want := map[string]struct {
		prov uint64
		data volclient.UsageShare
	}{
		"vm":       {64 * M, share(blk, 12*K+1*M)},      // block 0 anew; 1 and 5 with the snapshot
		"vm-snap":  {64 * M, share(0, blk+12*K+1*M)},    // block 0 with the clone, 1 with vm, 5 with both
		"vm-clone": {128 * M, share(12*K+4*K, blk+1*M)}, // blocks 1 and 2 its own
		"tmp":      {16 * M, share(2*M, 0)},             // its copy of block 0
	}
	rep := du(t, a, "--held")
	if len(rep.Volumes) != len(want) {
		t.Fatalf("du lists %d volumes, want %d: %+v", len(rep.Volumes), len(want), rep.Volumes)
	}
	for _, v := range rep.Volumes {
		w, ok := want[v.Name]
		got := v.Data
		got.Objects, got.ExclusiveObjects, got.SharedObjects = 0, 0, 0
		if !ok || v.Provisioned != w.prov || got != w.data || v.Missing != 0 {
			t.Errorf("du of %s: provisioned %d, data %+v; want %d, %+v", v.Name, v.Provisioned, got, w.prov, w.data)
		}
	}
	p := rep.Pool
	if p.Volumes != 3 || p.Snapshots != 1 || p.Provisioned != (64+128+16)*M ||
		p.Data.Bytes != 2*blk+2*12*K+4*K+1*M+2*M || p.Data.ExclusiveBytes != blk+16*K+2*M {
		t.Errorf("pool %+v", p)
	}
	// What the storage holds: the reachable part, and tmp-snap's
	// garbage (the first 2 MiB object of tmp and its map page).
	data, maps := duCount(st.data(t), duDataForm), duCount(st.maps(t), duPageForm)
	h := p.Held
	if h == nil || h.Data != data.objs || h.Map != maps.objs || h.Other != maps.other || data.other != (volclient.UsageCount{}) {
		t.Fatalf("du says the storage holds %+v; it holds data %+v (and %+v), map pages %+v, other %+v", h, data.objs, data.other, maps.objs, maps.other)
	}
	if h.UnreachableData.Bytes != 2*M || h.UnreachableData.Objects != 1 ||
		h.Data.Bytes-h.UnreachableData.Bytes != p.Data.Bytes || h.Map.Bytes-h.UnreachableMap.Bytes != p.Map.Bytes ||
		h.UnreachableMap.Objects != 1 {
		t.Errorf("unreachable: data %+v, map %+v; held %+v, reached data %+v, map %+v",
			h.UnreachableData, h.UnreachableMap, h, p.Data, p.Map)
	}

	// Host B sees the same.
	if rb := du(t, b, "--held"); !reflect.DeepEqual(rb, rep) {
		t.Errorf("du on B\n%+v\non A\n%+v", rb, rep)
	}
	// Names restrict the table, not the sharing.
	if r := du(t, b, "vm-snap"); len(r.Volumes) != 1 || !reflect.DeepEqual(r.Volumes[0], rep.Volumes[3]) {
		t.Errorf("du vm-snap: %+v; in the whole report: %+v", r.Volumes, rep.Volumes[3])
	}
	fails(t, a, []string{"du", "vm", "nope"}, `"nope"`)
	text := a.Must("vlmc", "du", "--bytes")
	for _, row := range [][]uint64{
		{128 * M, blk + 1*M + 16*K, 16 * K, blk + 1*M},
		{p.Provisioned, p.Data.Bytes, p.Data.ExclusiveBytes, p.Data.SharedBytes},
	} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^(vm-clone|TOTAL) +%d +%d +%d +%d$`, row[0], row[1], row[2], row[3]))
		if !re.MatchString(text) {
			t.Errorf("vlmc du --bytes lacks %s:\n%s", re, text)
		}
	}
	t.Logf("vlmc du:\n%s", a.Must("vlmc", "du", "--held"))

	// After a collection the pool holds what du counts, to the byte.
	a.Must("vlmc", "gc")
	after := du(t, b, "--held")
	data, maps = duCount(st.data(t), duDataForm), duCount(st.maps(t), duPageForm)
	if ap := after.Pool; ap.Data.Bytes != data.objs.Bytes || ap.Data.Objects != data.objs.Objects ||
		ap.Map.Bytes != maps.objs.Bytes || ap.Map.Objects != maps.objs.Objects ||
		ap.Held.UnreachableData != (volclient.UsageCount{}) || ap.Held.UnreachableMap != (volclient.UsageCount{}) {
		t.Errorf("after vlmc gc: du counts data %+v, map pages %+v (unreachable %+v, %+v); the storage holds data %+v, map pages %+v",
			ap.Data, ap.Map, ap.Held.UnreachableData, ap.Held.UnreachableMap, data.objs, maps.objs)
	}
	after.Pool.Held, rep.Pool.Held = nil, nil
	if !reflect.DeepEqual(after, rep) {
		t.Errorf("the collection changed what the volumes use:\n%+v\nbefore\n%+v", after, rep)
	}
}
