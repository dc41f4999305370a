package volume

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// Benchmarks: snapshot and clone latency by volume size (the ratio
// 1PiB/1GiB is reported as a metric; the design targets <= 2), and the
// cost of the first write to a block of a fresh clone against a plain
// volume, in time and in store calls. Each runs on memstore and on
// filestore in a tmpfs directory (/dev/shm when there is one).

type benchStores struct {
	maps, data store.Store
	plan       *faultstore.Plan
}

func openBenchStores(b *testing.B, kind string) benchStores {
	b.Helper()
	plan := faultstore.NewPlan(1)
	switch kind {
	case "mem":
		return benchStores{faultstore.Wrap(memstore.New(), plan), faultstore.Wrap(memstore.New(), plan), plan}
	case "file":
		base := ""
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			base = "/dev/shm"
		}
		dir, err := os.MkdirTemp(base, "volume-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		open := func(sub string) store.Store {
			s, err := filestore.Open(filestore.Options{Dir: dir + "/" + sub})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return faultstore.Wrap(s, plan)
		}
		return benchStores{open("maps"), open("data"), plan}
	}
	b.Fatalf("unknown store %q", kind)
	return benchStores{}
}

func benchEngine(b *testing.B, s benchStores) *Engine {
	e, err := New(s.maps, s.data, Options{Owner: "bench-host"})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

var benchSizes = []struct {
	name string
	size uint64
}{{"1GiB", 1 << 30}, {"1TiB", 1 << 40}, {"1PiB", 1 << 50}}

// populate writes 4 KiB into 64 blocks spread over the volume, so that
// its map has pages at every level.
func populate(b *testing.B, e *Engine, data store.Store, name string, size uint64) {
	ctx := context.Background()
	nb := size / DefaultBlockSize
	for i := range uint64(64) {
		blk := i * (nb / 64)
		if err := writeVol(ctx, e, data, name, blk*DefaultBlockSize, fill('p', 4096)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshot measures Snapshot of a populated volume by size.
func BenchmarkSnapshot(b *testing.B) {
	for _, kind := range []string{"mem", "file"} {
		b.Run(kind, func(b *testing.B) {
			benchBySize(b, kind, func(ctx context.Context, e *Engine, vol string, i int) error {
				return e.Snapshot(ctx, vol, fmt.Sprintf("%s-snap-%d", vol, i))
			})
		})
	}
}

// BenchmarkClone measures Clone of a snapshot of a populated volume by
// size (to the same size).
func BenchmarkClone(b *testing.B) {
	for _, kind := range []string{"mem", "file"} {
		b.Run(kind, func(b *testing.B) {
			benchBySize(b, kind, func(ctx context.Context, e *Engine, vol string, i int) error {
				return e.Clone(ctx, vol+"-base", fmt.Sprintf("%s-clone-%d", vol, i), 0)
			})
		})
	}
}

// benchBySize times op on a 1 GiB, 1 TiB and 1 PiB volume in turn, every
// iteration, and reports each and the ratio 1PiB/1GiB.
func benchBySize(b *testing.B, kind string, op func(ctx context.Context, e *Engine, vol string, i int) error) {
	ctx := context.Background()
	s := openBenchStores(b, kind)
	e := benchEngine(b, s)
	for _, sz := range benchSizes {
		vol := "bench-" + sz.name
		if err := e.Create(ctx, vol, sz.size); err != nil {
			b.Fatal(err)
		}
		populate(b, e, s.data, vol, sz.size)
		if err := e.Snapshot(ctx, vol, vol+"-base"); err != nil {
			b.Fatal(err)
		}
	}
	var total [3]time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for k, sz := range benchSizes {
			start := time.Now()
			if err := op(ctx, e, "bench-"+sz.name, i); err != nil {
				b.Fatal(err)
			}
			total[k] += time.Since(start)
		}
	}
	n := float64(b.N)
	for k, sz := range benchSizes {
		b.ReportMetric(float64(total[k].Nanoseconds())/n, "ns/"+sz.name)
	}
	b.ReportMetric(float64(total[2])/float64(total[0]), "ratio-1PiB/1GiB")
}

// BenchmarkFirstWrite measures the first 4 KiB write (MapWrite and the
// data write) to a random block: of a fresh clone whose parent has data
// there (one copy of a 4 MiB object) and of a plain volume (a zero block:
// no copy). It reports MapWrite's share and the store calls per write
// (memstore zero-fills the 4 MiB gap before a write at the end of a new
// object, which dominates mem/plain).
func BenchmarkFirstWrite(b *testing.B) {
	for _, kind := range []string{"mem", "file"} {
		for _, target := range []string{"clone", "plain"} {
			b.Run(kind+"/"+target, func(b *testing.B) {
				benchFirstWrite(b, kind, target)
			})
		}
	}
}

func benchFirstWrite(b *testing.B, kind, target string) {
	ctx := context.Background()
	s := openBenchStores(b, kind)
	e := benchEngine(b, s)
	const blocks = 16
	if err := e.Create(ctx, "fw-parent", 1<<40); err != nil {
		b.Fatal(err)
	}
	full := fill('f', DefaultBlockSize)
	for i := range uint64(blocks) {
		if err := writeVol(ctx, e, s.data, "fw-parent", i*DefaultBlockSize, full); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Snapshot(ctx, "fw-parent", "fw-snap"); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	p := fill('w', 4096)
	var counts faultstore.Counts
	var mapTime time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		vol := fmt.Sprintf("fw-%s-%d", target, i)
		var err error
		if target == "clone" {
			err = e.Clone(ctx, "fw-snap", vol, 0)
		} else {
			err = e.Create(ctx, vol, 1<<40)
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Open(ctx, vol); err != nil {
			b.Fatal(err)
		}
		off := rng.Uint64N(blocks)*DefaultBlockSize + rng.Uint64N(DefaultBlockSize/4096)*4096
		s.plan.Reset()
		b.StartTimer()
		t0 := time.Now()
		segs, err := e.MapWrite(ctx, vol, off, uint64(len(p)))
		if err != nil {
			b.Fatal(err)
		}
		mapTime += time.Since(t0)
		if err := s.data.WriteAt(ctx, segs[0].Object, p, int64(segs[0].Offset), true); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c := s.plan.Counts()
		counts.Copies += c.Copies
		counts.FUAWrites += c.FUAWrites
		counts.Writes += c.Writes
		counts.Syncs += c.Syncs
		counts.Reads += c.Reads
		if err := e.Remove(ctx, vol); err != nil { // frees the copied object
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(mapTime.Nanoseconds())/n, "mapwrite-ns/op")
	b.ReportMetric(float64(counts.Copies)/n, "copies/op")
	b.ReportMetric(float64(counts.FUAWrites)/n, "fua-writes/op")
	b.ReportMetric(float64(counts.Writes)/n, "writes/op")
	b.ReportMetric(float64(counts.Syncs)/n, "syncs/op")
	b.ReportMetric(float64(counts.Reads)/n, "reads/op")
}
