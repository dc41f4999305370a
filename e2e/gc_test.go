package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/xseg"
)

// The garbage collector through the real programs (vlmc gc, mapperd's
// periodic collection) on two hosts sharing one storage: a directory
// here, a RADOS pool in gc_ceph_test.go. What the stores hold is counted
// by hand (the files of the directories, `rados ls`), not through the
// engine.

// gcPool is a shared storage as the tests see it, bypassing the peers.
type gcPool struct {
	opts e2etest.Options
	// data and maps list the objects of each store: name -> size in
	// bytes (-1 where the backend's listing does not say).
	data, maps func(t *testing.T) map[string]int64
	// openMaps opens the maps store for volume.Check.
	openMaps func(t *testing.T) store.Store
}

func dirPool(t *testing.T) gcPool {
	shared := t.TempDir()
	o := e2etest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"}
	return gcPool{
		opts: o,
		data: func(t *testing.T) map[string]int64 { return listDir(t, o.DataDir) },
		maps: func(t *testing.T) map[string]int64 { return listDir(t, o.MapDir) },
		openMaps: func(t *testing.T) store.Store {
			s, err := filestore.Open(filestore.Options{Dir: o.MapDir})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

// listDir lists the object files below dir (filestore spreads them in
// two levels of directories), leaving out its locks and tmp directories.
func listDir(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a directory emptied and removed meanwhile
			}
			return err
		}
		if d.IsDir() && path != dir && (d.Name() == "locks" || d.Name() == "tmp") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			out[d.Name()] = fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	return out
}

// The object forms of docs/maps.md, spelled out again here.
var (
	dataForm = regexp.MustCompile(`^(.+)_([0-9a-f]{16})_([0-9a-f]{16})$`)
	pageForm = regexp.MustCompile(`^(.+)_([0-9a-f]{16})_m([0-9])_([0-9a-f]{16})$`)
)

// gcObjects are the collectable objects of a pool: data objects of the
// data store and map pages of the maps store, name -> size.
type gcObjects struct {
	data, pages map[string]int64
	all         map[string]int64 // maps store: everything (headers, records, markers)
}

func (p gcPool) objects(t *testing.T) gcObjects {
	t.Helper()
	o := gcObjects{data: map[string]int64{}, pages: map[string]int64{}}
	for n, s := range p.data(t) {
		if dataForm.MatchString(n) {
			o.data[n] = s
		}
	}
	o.all = p.maps(t)
	for n, s := range o.all {
		if pageForm.MatchString(n) {
			o.pages[n] = s
		}
	}
	return o
}

// prefix is the volume name an object is named after.
func objPrefix(name string) string {
	if m := pageForm.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	if m := dataForm.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

// count returns how many of objs are named after prefix.
func count(objs map[string]int64, prefix string) int {
	n := 0
	for o := range objs {
		if objPrefix(o) == prefix {
			n++
		}
	}
	return n
}

// gcRun runs vlmc gc --json with args on e and decodes the report.
func gcRun(t *testing.T, e *e2etest.Env, args ...string) volclient.GCReport {
	t.Helper()
	out := e.Must("vlmc", append([]string{"gc", "--json"}, args...)...)
	var r volclient.GCReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("vlmc gc --json %v: %v\n%s", args, err, out)
	}
	return r
}

// qemu runs qemu-io commands on volume vol through e's NBD endpoint.
func qemu(t *testing.T, e *e2etest.Env, vol string, cmds ...string) {
	t.Helper()
	if err := testutil.QemuIO(t, e.URI(vol), cmds...); err != nil {
		t.Fatalf("qemu-io %s %v: %v", vol, cmds, err)
	}
}

// readVol reads volume vol whole through e's NBD endpoint (nbdcopy).
func readVol(t *testing.T, e *e2etest.Env, vol string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nbdcopy", e.URI(vol), "-")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("nbdcopy of %s: %v\n%s", vol, err, errb.String())
	}
	return out.Bytes()
}

// content is the oracle of a volume: its bytes.
type content []byte

// fill writes pattern p over [off, off+n) of c.
func (c content) fill(off, n int, p byte) {
	for i := off; i < off+n; i++ {
		c[i] = p
	}
}

func filled(n int, p byte) content {
	c := make(content, n)
	c.fill(0, n, p)
	return c
}

// checkVols reads every volume of want on e and compares it byte for byte.
func checkVols(t *testing.T, e *e2etest.Env, what string, want map[string]content) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		got := readVol(t, e, name)
		if w := want[name]; !bytes.Equal(got, w) {
			if len(got) != len(w) {
				t.Fatalf("%s: volume %s reads %d bytes, want %d", what, name, len(got), len(w))
			}
			i := 0
			for got[i] == w[i] {
				i++
			}
			t.Fatalf("%s: volume %s: byte %d is %d, want %d", what, name, i, got[i], w[i])
		}
	}
}

const mib = 1 << 20

func TestGCSharedDirectory(t *testing.T) { runGCBasic(t, dirPool(t)) }

// runGCBasic: garbage made on both hosts (a volume removed after its
// snapshot, a snapshot removed while a clone still reaches its objects,
// a volume's snapshot removed after the volume moved on) is listed by
// `vlmc gc --dry-run` on one host, which deletes nothing, and deleted by
// `vlmc gc` on the other: exactly what the dry run listed, leaving every
// data object a live volume reaches (counted per volume by hand) and
// their bytes; a second collection finds nothing; once every volume is
// removed a collection leaves no data object or map page at all, and the
// epoch records stay.
func runGCBasic(t *testing.T, pool gcPool) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	a, b := e2etest.TwoHosts(t, pool.opts)
	a.Start()
	b.Start()
	want := map[string]content{}

	// A: base, snapshot, a clone of it, the snapshot removed (the clone
	// still reaches the objects it shares with base), base moves on.
	a.Must("vlmc", "create", "base", "--size", "16M")
	qemu(t, a, "base", "write -P 1 0 16M")
	a.Must("vlmc", "snapshot", "base", "base-snap")
	a.Must("vlmc", "create", "clone", "--snap", "base-snap")
	qemu(t, a, "clone", "write -P 2 0 4M")
	a.Must("vlmc", "remove", "base-snap")
	qemu(t, a, "base", "write -P 3 4M 4M")
	want["base"] = filled(16*mib, 1)
	want["base"].fill(4*mib, 4*mib, 3)
	want["clone"] = filled(16*mib, 1)
	want["clone"].fill(0, 4*mib, 2)
	// A: junk, whose snapshot was removed before it: what they shared
	// is nobody's.
	a.Must("vlmc", "create", "junk", "--size", "16M")
	qemu(t, a, "junk", "write -P 4 0 16M")
	a.Must("vlmc", "snapshot", "junk", "junk-snap")
	qemu(t, a, "junk", "write -P 5 0 8M")
	a.Must("vlmc", "remove", "junk-snap")
	a.Must("vlmc", "remove", "junk")
	// B: bvol, snapshot, bvol moves on, snapshot removed: its old first
	// block is nobody's.
	b.Must("vlmc", "create", "bvol", "--size", "8M")
	qemu(t, b, "bvol", "write -P 6 0 8M")
	b.Must("vlmc", "snapshot", "bvol", "bvol-snap")
	qemu(t, b, "bvol", "write -P 7 0 4M")
	b.Must("vlmc", "remove", "bvol-snap")
	want["bvol"] = filled(8*mib, 6)
	want["bvol"].fill(0, 4*mib, 7)

	before := pool.objects(t)
	t.Logf("before: %d data objects, %d map pages", len(before.data), len(before.pages))
	if count(before.data, "junk") == 0 || count(before.data, "bvol") != 3 {
		t.Fatalf("no garbage made: %d data objects of junk, %d of bvol (want 3: the snapshot's first block too)",
			count(before.data, "junk"), count(before.data, "bvol"))
	}

	// Dry run, on B (most garbage is A's): lists, deletes nothing.
	dry := gcRun(t, b, "--dry-run")
	t.Logf("dry run: %+v", dry)
	if still := pool.objects(t); !maps.Equal(still.data, before.data) || !maps.Equal(still.pages, before.pages) {
		t.Fatalf("gc --dry-run deleted objects: data %d -> %d, pages %d -> %d", len(before.data), len(still.data), len(before.pages), len(still.pages))
	}
	if !dry.DryRun || dry.Deleted == 0 || dry.Deleted != len(dry.Objects) || dry.Deleted != dry.DeletedData+dry.DeletedPages {
		t.Fatalf("gc --dry-run report: %+v", dry)
	}
	listed := map[string]bool{}
	for _, o := range dry.Objects {
		if _, ok := before.data[o]; !ok {
			if _, ok := before.pages[o]; !ok {
				t.Errorf("gc --dry-run lists %s, which is neither a data object nor a map page of the pool", o)
			}
		}
		listed[o] = true
	}
	for o := range before.data {
		if objPrefix(o) == "junk" && !listed[o] {
			t.Errorf("gc --dry-run does not list %s (junk and its snapshot are removed)", o)
		}
	}
	for o := range before.pages {
		if objPrefix(o) == "junk" && !listed[o] {
			t.Errorf("gc --dry-run does not list map page %s", o)
		}
	}

	// The collection, on A.
	rep := gcRun(t, a)
	t.Logf("gc: %+v", rep)
	after := pool.objects(t)
	var deleted []string
	var bytesGone int64
	for _, set := range []struct{ before, after map[string]int64 }{{before.data, after.data}, {before.pages, after.pages}} {
		for o, size := range set.before {
			if _, ok := set.after[o]; !ok {
				deleted = append(deleted, o)
				bytesGone += size
			}
		}
	}
	slices.Sort(deleted)
	if got := slices.Sorted(maps.Keys(listed)); !slices.Equal(deleted, got) {
		t.Errorf("gc deleted %d objects, the dry run listed %d:\ndeleted %v\nlisted  %v", len(deleted), len(got), deleted, got)
	}
	if rep.DryRun || rep.Deleted != len(deleted) || rep.DeletedData != len(before.data)-len(after.data) ||
		rep.DeletedPages != len(before.pages)-len(after.pages) {
		t.Errorf("gc report %+v; by hand %d deleted: %d data objects, %d map pages", rep, len(deleted),
			len(before.data)-len(after.data), len(before.pages)-len(after.pages))
	}
	if bytesGone >= 0 && pool.opts.CephConf == "" && rep.Bytes != bytesGone {
		t.Errorf("gc reports %d bytes, the deleted files held %d", rep.Bytes, bytesGone)
	}
	// What the live volumes reach, per name: base's four first blocks
	// (clone and base share three, the clone the fourth) and base's own
	// new second; the clone's own first; bvol's new first and old second.
	for prefix, n := range map[string]int{"base": 5, "clone": 1, "bvol": 2, "junk": 0} {
		if got := count(after.data, prefix); got != n {
			t.Errorf("after gc: %d data objects of %s, want %d", got, prefix, n)
		}
	}
	if n := count(after.pages, "junk"); n != 0 {
		t.Errorf("after gc: %d map pages of junk left", n)
	}
	checkVols(t, b, "after gc", want)
	if err := volume.Check(context.Background(), pool.openMaps(t)); err != nil {
		t.Fatalf("after gc: %v", err)
	}
	if again := gcRun(t, b, "--dry-run"); again.Deleted != 0 {
		t.Errorf("a second collection would delete %d objects: %v", again.Deleted, again.Objects)
	}

	// The text report.
	for _, v := range []string{"clone", "base", "bvol"} {
		a.Must("vlmc", "remove", v)
	}
	out := a.Must("vlmc", "gc")
	if !regexp.MustCompile(`(?m)^deleted [1-9][0-9]* objects \([0-9]+ map pages, [0-9]+ data objects\), `).MatchString(out) {
		t.Errorf("vlmc gc prints:\n%s", out)
	}
	final := pool.objects(t)
	if len(final.data) != 0 || len(final.pages) != 0 {
		t.Errorf("every volume removed and collected, yet %d data objects and %d map pages are left: %v %v",
			len(final.data), len(final.pages), slices.Sorted(maps.Keys(final.data)), slices.Sorted(maps.Keys(final.pages)))
	}
	for _, v := range []string{"base", "clone", "junk", "bvol"} {
		if _, ok := final.all[v+"_epoch"]; !ok {
			t.Errorf("the epoch record of %s is gone", v)
		}
	}
	for n := range final.all {
		if strings.HasPrefix(n, "archip_root_") {
			t.Errorf("root marker %s left after a collection with nothing in flight", n)
		}
	}
}

func TestGCWhileWritingSharedDirectory(t *testing.T) { runGCWhileWriting(t, dirPool(t), 12) }

// runGCWhileWriting: host B collects over and over while host A writes a
// volume through its NBD endpoint (qemu-io, flushed), snapshots it,
// clones snapshots, writes the clones, renames and removes them. After
// every round the volume and the newest snapshot read back as written;
// at the end every live volume does, the maps check, and a collection
// once quiet finds nothing left to delete.
func runGCWhileWriting(t *testing.T, pool gcPool, rounds int) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	a, b := e2etest.TwoHosts(t, pool.opts)
	a.Start()
	b.Start()
	const size = 16 * mib
	const region = 64 << 10
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	want := map[string]content{}
	a.Must("vlmc", "create", "w", "--size", "16M")
	qemu(t, a, "w", "write -P 1 0 16M")
	want["w"] = filled(size, 1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var gcs, gcDeleted int
	var gcErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := b.Run("vlmc", "gc", "--json")
			if err != nil {
				gcErr = fmt.Errorf("vlmc gc on host-b during the writes: %v\n%s", err, out)
				return
			}
			var r volclient.GCReport
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				gcErr = fmt.Errorf("vlmc gc --json: %v\n%s", err, out)
				return
			}
			gcs++
			gcDeleted += r.Deleted
		}
	})
	var snaps, clones []string
	pat := byte(1)
	for r := range rounds {
		// Writes to w, then a snapshot of it.
		var cmds []string
		for range 3 {
			pat = pat%250 + 2
			off := rng.IntN(size/region) * region
			cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", pat, off, region))
			want["w"].fill(off, region, pat)
		}
		qemu(t, a, "w", append(cmds, "flush")...)
		s := fmt.Sprintf("w-s%d", r)
		a.Must("vlmc", "snapshot", "w", s)
		want[s] = slices.Clone(want["w"])
		snaps = append(snaps, s)
		// A clone of a snapshot, written; an older clone renamed or
		// removed; old snapshots removed (their clones live on).
		if r%3 == 1 {
			p := snaps[rng.IntN(len(snaps))]
			c := fmt.Sprintf("c%d", r)
			a.Must("vlmc", "create", c, "--snap", p)
			want[c] = slices.Clone(want[p])
			off := rng.IntN(size/region) * region
			qemu(t, a, c, fmt.Sprintf("write -P 255 %d %d", off, region), "flush")
			want[c].fill(off, region, 255)
			clones = append(clones, c)
		}
		if r%4 == 3 && len(clones) > 0 {
			c := clones[0]
			if rng.IntN(2) == 0 {
				a.Must("vlmc", "rename", c, c+"-r")
				want[c+"-r"] = want[c]
				clones[0] = c + "-r"
			} else {
				a.Must("vlmc", "remove", c)
				clones = clones[1:]
			}
			delete(want, c)
		}
		for len(snaps) > 2 {
			a.Must("vlmc", "remove", snaps[0])
			delete(want, snaps[0])
			snaps = snaps[1:]
		}
		checkVols(t, a, fmt.Sprintf("round %d", r), map[string]content{"w": want["w"], s: want[s]})
	}
	close(stop)
	wg.Wait()
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	if gcs == 0 {
		t.Fatal("no collection ran during the writes")
	}
	t.Logf("%d rounds; %d collections during them deleted %d objects", rounds, gcs, gcDeleted)
	last := gcRun(t, b)
	t.Logf("quiet: %+v", last)
	checkVols(t, b, "at the end", want)
	if err := volume.Check(context.Background(), pool.openMaps(t)); err != nil {
		t.Fatal(err)
	}
	if again := gcRun(t, a, "--dry-run"); again.Deleted != 0 {
		t.Errorf("once quiet and collected, a collection would still delete %d objects: %v", again.Deleted, again.Objects)
	}
}

func TestGCKilledSharedDirectory(t *testing.T) { runGCKilled(t, dirPool(t), 4) }

// runGCKilled: host B's mapperd is killed (SIGKILL) while B collects, at a
// random point of the collection. Even rounds B restarts and gives the
// collector's lock back (its intent): A's collection then needs no
// force. Odd rounds B stays down: A's collection is refused naming host-b
// and --force, and A collects with --force. Either way the collection
// that finishes deletes the garbage the killed one left, and the live
// volumes lose nothing.
func runGCKilled(t *testing.T, pool gcPool, rounds int) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	a, b := e2etest.TwoHosts(t, pool.opts)
	a.Start()
	b.Start()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	want := map[string]content{}
	a.Must("vlmc", "create", "keep", "--size", "16M")
	qemu(t, a, "keep", "write -P 1 0 16M")
	a.Must("vlmc", "snapshot", "keep", "keep-s")
	a.Must("vlmc", "create", "keep-c", "--snap", "keep-s")
	a.Must("vlmc", "remove", "keep-s")
	qemu(t, a, "keep-c", "write -P 2 4M 4M")
	qemu(t, a, "keep", "write -P 3 0 4M")
	want["keep"] = filled(16*mib, 1)
	want["keep"].fill(0, 4*mib, 3)
	want["keep-c"] = filled(16*mib, 1)
	want["keep-c"].fill(4*mib, 4*mib, 2)

	vc, err := volclient.DialConfig(b.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vc.Disconnect)
	refused, progressed := 0, 0
	for r := range rounds {
		// Garbage of many objects, so that the collection lasts: 4 KiB
		// written in each of 128 blocks of a volume whose snapshot, then
		// itself, are removed.
		junk := fmt.Sprintf("junk%d", r)
		a.Must("vlmc", "create", junk, "--size", "512M")
		var cmds []string
		for i := range 128 {
			cmds = append(cmds, fmt.Sprintf("write -P %d %d 4k", r+10, i*4*mib))
		}
		qemu(t, a, junk, cmds...)
		a.Must("vlmc", "snapshot", junk, junk+"-s")
		a.Must("vlmc", "remove", junk+"-s")
		a.Must("vlmc", "remove", junk)
		if n := count(pool.objects(t).data, junk); n != 128 {
			t.Fatalf("round %d: %d data objects of %s, want 128", r, n, junk)
		}

		// How long B's collection of this garbage lasts: a dry run.
		t0 := time.Now()
		dry, err := vc.GC(context.Background(), volclient.GCOptions{DryRun: true})
		if err != nil {
			t.Fatalf("round %d: host-b's gc --dry-run: %v", r, err)
		}
		took := time.Since(t0)
		if dry.Deleted < 128 {
			t.Fatalf("round %d: host-b's gc --dry-run would delete %d objects, want at least %s's 128", r, dry.Deleted, junk)
		}
		// B collects (through volclient, whose progress polls B's status
		// while the collection runs) and is killed at a random point of
		// it: in even rounds anywhere up to a little after the end, in
		// odd rounds between a fifth and two thirds of the way.
		frac := 0.2 + 0.47*rng.Float64()
		if r%2 == 0 {
			frac = 1.2 * rng.Float64()
		}
		delay := time.Duration(frac * float64(took))
		pid := peer.ReadPidfile(b.Cfg.PidFile("mapperd")).PID
		var seen []string
		timer := time.AfterFunc(delay, func() { syscall.Kill(pid, syscall.SIGKILL) })
		_, gcErr := vc.GC(context.Background(), volclient.GCOptions{
			PollInterval: time.Millisecond,
			Progress: func(p volclient.GCProgress) {
				if len(seen) == 0 || seen[len(seen)-1] != p.Phase {
					seen = append(seen, p.Phase)
				}
			},
		})
		if timer.Stop() { // it ended first: killed after it, then
			syscall.Kill(pid, syscall.SIGKILL)
		}
		testutil.WaitFor(t, 10*time.Second, "host-b's mapperd to die", func() bool { return !xseg.ProcessAlive(pid) })
		t.Logf("round %d: host-b's mapperd killed %v into a collection (a dry run took %v); phases seen %v; its gc returned %v",
			r, delay.Round(time.Microsecond), took.Round(time.Microsecond), seen, gcErr)
		progressed += len(seen)

		if r%2 == 0 {
			// B comes back and gives the lock back at its first request.
			b.Must("archipelago", "start")
			b.Must("vlmc", "list")
			rep := gcRun(t, a)
			t.Logf("round %d: host-a's gc after host-b's restart: %+v", r, rep)
		} else {
			out, err := a.Run("vlmc", "gc")
			if err != nil {
				refused++
				if !strings.Contains(out, "host-b") || !strings.Contains(out, "--force") {
					t.Errorf("round %d: host-a's gc while host-b's killed collection holds the lock fails with:\n%s\nwant host-b named and --force said", r, out)
				}
				rep := gcRun(t, a, "--force")
				t.Logf("round %d: host-a's gc --force: %+v", r, rep)
			} else {
				t.Logf("round %d: host-a's gc needed no force (host-b was killed after giving the lock back):\n%s", r, out)
			}
			b.Must("archipelago", "start")
		}
		after := pool.objects(t)
		for p := range after.data {
			if strings.HasPrefix(objPrefix(p), "junk") {
				t.Errorf("round %d: %s left after the collection that finished", r, p)
			}
		}
		checkVols(t, a, fmt.Sprintf("round %d", r), want)
		if err := volume.Check(context.Background(), pool.openMaps(t)); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	if rounds > 1 && refused == 0 {
		t.Error("host-a's collection never found the lock of host-b's killed one")
	}
	if progressed == 0 {
		t.Error("GCOptions.Progress was never called while host-b's collections ran (status polled every millisecond)")
	}
	// The live volumes' objects are all still there, and nothing else.
	final := pool.objects(t)
	for prefix, n := range map[string]int{"keep": 5, "keep-c": 1} {
		if got := count(final.data, prefix); got != n {
			t.Errorf("at the end: %d data objects of %s, want %d", got, prefix, n)
		}
	}
}

func TestGCPeriodicSharedDirectory(t *testing.T) { runGCPeriodic(t, dirPool(t)) }

// runGCPeriodic: with GC_INTERVAL = 1s on both hosts, the garbage of a
// removed volume goes without any vlmc gc, the live volume keeps its
// bytes, and the mapperd logs say the collections ran (one host at a
// time: the other's try is skipped at level info, never an error).
func runGCPeriodic(t *testing.T, pool gcPool) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	a, b := e2etest.TwoHosts(t, pool.opts)
	for _, e := range []*e2etest.Env{a, b} {
		text, err := os.ReadFile(e.Config)
		if err != nil {
			t.Fatal(err)
		}
		text = bytes.Replace(text, []byte("[ARCHIPELAGO]\n"), []byte("[ARCHIPELAGO]\nGC_INTERVAL = 1s\n"), 1)
		if err := os.WriteFile(e.Config, text, 0o644); err != nil {
			t.Fatal(err)
		}
		e.Start()
	}
	a.Must("vlmc", "create", "live", "--size", "8M")
	qemu(t, a, "live", "write -P 1 0 8M")
	a.Must("vlmc", "create", "junk", "--size", "8M")
	qemu(t, a, "junk", "write -P 2 0 8M")
	a.Must("vlmc", "snapshot", "junk", "junk-s")
	a.Must("vlmc", "remove", "junk-s")
	a.Must("vlmc", "snapshot", "live", "live-s")
	qemu(t, a, "live", "write -P 3 0 4M")
	a.Must("vlmc", "remove", "live-s")
	a.Must("vlmc", "remove", "junk")
	testutil.WaitFor(t, 30*time.Second, "the periodic collection to delete junk's objects and live-s's first block", func() bool {
		o := pool.objects(t)
		return count(o.data, "junk") == 0 && count(o.pages, "junk") == 0 && count(o.data, "live") == 2
	})
	want := filled(8*mib, 1)
	want.fill(0, 4*mib, 3)
	checkVols(t, b, "after the periodic collection", map[string]content{"live": want})
	var ran int
	for _, e := range []*e2etest.Env{a, b} {
		log, err := os.ReadFile(e.Cfg.LogFile("mapperd"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(log), "\n") {
			if !strings.Contains(l, "periodic garbage collection") {
				continue
			}
			if strings.Contains(l, "deleted=") {
				ran++
			}
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				t.Errorf("%s: %s", e.Cfg.HostID, l)
			}
		}
	}
	if ran == 0 {
		t.Error("no mapperd log line says a periodic collection ran")
	}
}

func TestGCRootMarkersSharedDirectory(t *testing.T) { runGCRootMarkers(t, dirPool(t), 2) }

// runGCRootMarkers: host B's mapperd is frozen (SIGSTOP) in the middle of
// its collection's mark — the volumes listed, some walked — while host A
// makes new roots through vlmc: a clone of a snapshot, then the snapshot
// removed (the clone alone reaches its blocks: the volume rewrote them
// all), and a rename of the previous round's clone. B's collection listed
// the volumes before the clone and the new name existed, and may walk
// the snapshot and the old name only once they are gone: only the root
// markers make it walk the clone and the new name (docs/gc.md, hazard
// 2). Once B goes on, every volume reads back as written. It goes on
// until B was frozen in rounds rounds (at most four times as many).
func runGCRootMarkers(t *testing.T, pool gcPool, rounds int) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	a, b := e2etest.TwoHosts(t, pool.opts)
	a.Start()
	b.Start()
	ctx := context.Background()
	// Volumes enough that B's mark takes a while: header-only ones.
	const fillers = 150
	va, err := volclient.DialConfig(a.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(va.Disconnect)
	var fwg sync.WaitGroup
	fillErr := make(chan error, fillers)
	for w := range 8 {
		fwg.Go(func() {
			for i := w; i < fillers; i += 8 {
				if err := va.Create(ctx, fmt.Sprintf("filler%03d", i), mib); err != nil {
					fillErr <- err
					return
				}
			}
		})
	}
	fwg.Wait()
	close(fillErr)
	for err := range fillErr {
		t.Fatal(err)
	}
	vb, err := volclient.DialConfig(b.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vb.Disconnect)
	a.Must("vlmc", "create", "vol", "--size", "16M")
	want := map[string]content{"vol": make(content, 16*mib)}
	// write rewrites 64 KiB at the start of every block of vol.
	write := func(p int) {
		var cmds []string
		for i := range 4 {
			cmds = append(cmds, fmt.Sprintf("write -P %d %d 64k", p, i*4*mib))
			want["vol"].fill(i*4*mib, 64<<10, byte(p))
		}
		qemu(t, a, "vol", append(cmds, "flush")...)
	}
	write(1)
	pid := peer.ReadPidfile(b.Cfg.PidFile("mapperd")).PID
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	frozen, lastClone := 0, ""
	for r := 0; frozen < rounds && r < 4*rounds; r++ {
		// The snapshot's blocks are its alone once vol is rewritten.
		s := fmt.Sprintf("vol-s%d", r)
		a.Must("vlmc", "snapshot", "vol", s)
		want[s] = slices.Clone(want["vol"])
		write(r + 2)

		stopped := make(chan volclient.GCProgress, 1)
		var once sync.Once
		var rep *volclient.GCReport
		var gcErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			rep, gcErr = vb.GC(ctx, volclient.GCOptions{
				PollInterval: 200 * time.Microsecond,
				PollTimeout:  time.Second,
				Progress: func(p volclient.GCProgress) {
					if p.Phase == "marking" && p.Volumes >= 1 && p.Volumes < fillers/2 {
						once.Do(func() {
							syscall.Kill(pid, syscall.SIGSTOP)
							stopped <- p
						})
					}
				},
			})
		}()
		var at volclient.GCProgress
		select {
		case at = <-stopped:
		case <-done:
			t.Logf("round %d: host-b's collection ended before it could be frozen while marking (%v)", r, gcErr)
			continue
		}
		// B is frozen after walking at.Volumes of the volumes it listed.
		c := fmt.Sprintf("clone%d", r)
		a.Must("vlmc", "create", c, "--snap", s)
		want[c] = want[s]
		a.Must("vlmc", "remove", s)
		delete(want, s)
		if lastClone != "" {
			a.Must("vlmc", "rename", lastClone, lastClone+"-renamed")
			want[lastClone+"-renamed"] = want[lastClone]
			delete(want, lastClone)
		}
		lastClone = c
		syscall.Kill(pid, syscall.SIGCONT)
		<-done
		if gcErr != nil {
			t.Fatalf("round %d: host-b's gc, frozen after %d volumes walked: %v", r, at.Volumes, gcErr)
		}
		frozen++
		t.Logf("round %d: host-b's collection frozen after %d volumes walked; then: %+v", r, at.Volumes, *rep)
		checkVols(t, a, fmt.Sprintf("round %d", r), want)
	}
	if frozen == 0 {
		t.Fatal("host-b's collection was never frozen while marking")
	}
	if err := volume.Check(ctx, pool.openMaps(t)); err != nil {
		t.Fatal(err)
	}
}
