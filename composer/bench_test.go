package composer_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
)

// BenchmarkVlmcdVsFiled measures 4 KiB random reads and writes at queue
// depth 32 through vlmcd (volume requests: mapper, cache, parts) and, in
// the same run, straight to filed on the same objects, and reports both
// rates and their ratio. Run with -benchtime 20000x.
func BenchmarkVlmcdVsFiled(b *testing.B) {
	s := stacktest.Start(b, stacktest.Options{})
	const size = 256 << 20
	if err := s.Create("benchvol01", size); err != nil {
		b.Fatal(err)
	}
	fill := make([]byte, 4<<20)
	for off := uint64(0); off < size; off += uint64(len(fill)) {
		if err := s.Write("benchvol01", off, fill, 0); err != nil {
			b.Fatal(err)
		}
	}
	for _, op := range []xseg.Op{xseg.OpRead, xseg.OpWrite} {
		b.Run(op.String(), func(b *testing.B) {
			run := func(dst int, target func(off uint64) (string, uint64)) float64 {
				var n atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for g := 0; g < 32; g++ {
					wg.Add(1)
					go func(seed uint64) {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(seed, 9))
						c := volclient.New(s.Client, dst)
						for n.Add(1) <= int64(b.N) {
							off := rng.Uint64N(size/4096) * 4096
							name, o := target(off)
							err := c.Do(context.Background(), volclient.Call{Op: op, Target: name, Offset: o, Size: 4096, BufLen: 4096})
							if err != nil {
								b.Error(err)
								return
							}
						}
					}(uint64(g))
				}
				wg.Wait()
				return float64(b.N) / time.Since(start).Seconds()
			}
			vol := run(stacktest.Vlmcd, func(off uint64) (string, uint64) { return "benchvol01", off })
			direct := run(stacktest.BlockerB, func(off uint64) (string, uint64) { return objectOf(b, s, off), off % (4 << 20) })
			b.ReportMetric(vol, "vlmcd-IOPS")
			b.ReportMetric(direct, "filed-IOPS")
			b.ReportMetric(vol/direct, "vlmcd/filed")
		})
	}
}

var objCache sync.Map

// objectOf asks the mapper (once per block) which object holds off.
func objectOf(b *testing.B, s *stacktest.Stack, off uint64) string {
	blk := off >> 22
	if v, ok := objCache.Load(blk); ok {
		return v.(string)
	}
	segs, err := s.MapRead("benchvol01", blk<<22, 4096)
	if err != nil || len(segs) != 1 || segs[0].Object == "" {
		b.Fatalf("map of block %d: %v %+v", blk, err, segs)
	}
	objCache.Store(blk, segs[0].Object)
	return segs[0].Object
}

// BenchmarkFlush measures a FLUSH of a volume after a 4 KiB write, at
// queue depth 1, through vlmcd (flush-us), and the part of it that
// confirms the volume's lock (see docs/maps.md "Fencing"): the mapper's
// FLUSH (mapper-flush-us), beside a PING of the mapper (mapper-ping-us),
// the round trip alone. Run with -benchtime 2000x.
func BenchmarkFlush(b *testing.B) {
	s := stacktest.Start(b, stacktest.Options{})
	if err := s.Create("benchvol02", 64<<20); err != nil {
		b.Fatal(err)
	}
	c := volclient.New(s.Client, stacktest.Vlmcd)
	m := volclient.New(s.Client, stacktest.Mapper)
	ctx := context.Background()
	write := volclient.Call{Op: xseg.OpWrite, Target: "benchvol02", Size: 4096, BufLen: 4096}
	if err := c.Do(ctx, write); err != nil {
		b.Fatal(err)
	}
	var flush, mflush, ping time.Duration
	timed := func(sum *time.Duration, cl *volclient.Client, k volclient.Call) {
		start := time.Now()
		if err := cl.Do(ctx, k); err != nil {
			b.Fatal(err)
		}
		*sum += time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Do(ctx, write); err != nil {
			b.Fatal(err)
		}
		timed(&flush, c, volclient.Call{Op: xseg.OpFlush, Target: "benchvol02"})
		timed(&mflush, m, volclient.Call{Op: xseg.OpFlush, Target: "benchvol02"})
		timed(&ping, m, volclient.Call{Op: xseg.OpPing})
	}
	for _, r := range []struct {
		d    time.Duration
		unit string
	}{{flush, "flush-us"}, {mflush, "mapper-flush-us"}, {ping, "mapper-ping-us"}} {
		b.ReportMetric(float64(r.d.Microseconds())/float64(b.N), r.unit)
	}
}
