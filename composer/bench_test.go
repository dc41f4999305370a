package composer_test

import (
	"context"
	"fmt"
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
// depths 1 and 32 through vlmcd (volume requests: mapper, cache, parts)
// and, in the same run, straight to filed on the same objects, and reports
// both rates and their ratio. Run with -benchtime 20000x. The volume's I/O goes
// through a session of the typed API; filed's has no typed API (objects,
// not volumes): it is sent as raw requests.
func BenchmarkVlmcdVsFiled(b *testing.B) {
	s := stacktest.Start(b, stacktest.Options{})
	const size = 256 << 20
	s.Create(b, "benchvol01", size)
	v := s.Session(b, "benchvol01")
	fill := make([]byte, 4<<20)
	for off := uint64(0); off < size; off += uint64(len(fill)) {
		if err := v.WriteAt(context.Background(), fill, off, false); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		op    xseg.Op
		depth int
	}{{xseg.OpRead, 1}, {xseg.OpWrite, 1}, {xseg.OpRead, 32}, {xseg.OpWrite, 32}} {
		op := c.op
		b.Run(fmt.Sprintf("%s/depth%d", op, c.depth), func(b *testing.B) {
			run := func(do func(off uint64, buf []byte) error) float64 {
				var n atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for g := 0; g < c.depth; g++ {
					wg.Add(1)
					go func(seed uint64) {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(seed, 9))
						buf := make([]byte, 4096)
						for n.Add(1) <= int64(b.N) {
							off := rng.Uint64N(size/4096) * 4096
							if err := do(off, buf); err != nil {
								b.Error(err)
								return
							}
						}
					}(uint64(g))
				}
				wg.Wait()
				return float64(b.N) / time.Since(start).Seconds()
			}
			ctx := context.Background()
			vol := run(func(off uint64, buf []byte) error {
				if op == xseg.OpRead {
					return v.ReadAt(ctx, buf, off)
				}
				return v.WriteAt(ctx, buf, off, false)
			})
			filed := volclient.New(s.Client, stacktest.BlockerB)
			direct := run(func(off uint64, buf []byte) error {
				return filed.Do(ctx, volclient.Call{Op: op, Target: objectOf(b, s, off), Offset: off % (4 << 20), Size: 4096, BufLen: 4096})
			})
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
	segs, err := s.TryMapRead("benchvol01", blk<<22, 4096)
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
// the round trip alone. Run with -benchtime 2000x. The volume's write and
// FLUSH go through a session of the typed API; the mapper's FLUSH and PING
// are mapper ops, sent as raw requests.
func BenchmarkFlush(b *testing.B) {
	s := stacktest.Start(b, stacktest.Options{})
	s.Create(b, "benchvol02", 64<<20)
	v := s.Session(b, "benchvol02")
	m := volclient.New(s.Client, stacktest.Mapper)
	ctx := context.Background()
	block := make([]byte, 4096)
	if err := v.WriteAt(ctx, block, 0, false); err != nil {
		b.Fatal(err)
	}
	var flush, mflush, ping time.Duration
	timed := func(sum *time.Duration, call func() error) {
		start := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		*sum += time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := v.WriteAt(ctx, block, 0, false); err != nil {
			b.Fatal(err)
		}
		timed(&flush, func() error { return v.Flush(ctx) })
		timed(&mflush, func() error { return m.Do(ctx, volclient.Call{Op: xseg.OpFlush, Target: "benchvol02"}) })
		timed(&ping, func() error { return m.Do(ctx, volclient.Call{Op: xseg.OpPing}) })
	}
	for _, r := range []struct {
		d    time.Duration
		unit string
	}{{flush, "flush-us"}, {mflush, "mapper-flush-us"}, {ping, "mapper-ping-us"}} {
		b.ReportMetric(float64(r.d.Microseconds())/float64(b.N), r.unit)
	}
}
