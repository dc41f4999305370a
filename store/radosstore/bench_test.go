//go:build ceph

package radosstore_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// The layers of the RADOS path, 4 KiB random writes and reads on 64
// objects of 4 MiB, 16 in flight (as scripts/bench-rados.sh and rbd bench)
// and one at a time (where latency decides):
//
//	go test -tags ceph -run XXX -bench Layers -benchtime 20000x ./store/radosstore/
//
// "aio" is librados' aio straight from Go (the floor of radosd), "sync"
// the synchronous calls from 16 goroutines, "radosd" the same through the
// segment to a radosd process. Each reports IOPS; ns/op at depth 1 is the
// latency.
func BenchmarkLayers(b *testing.B) {
	o := cluster(b)
	o.Namespace = namespace(b, o)
	parent := b
	direct, err := radosstore.Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { direct.Close() })
	var direct0 store.Store = direct
	const objects, objSize, size = 64, 4 << 20, 4096
	buf := make([]byte, objSize)
	for i := range objects {
		if err := direct.WriteAt(b.Context(), obj(i), buf, 0, false); err != nil {
			b.Fatal(err)
		}
	}
	if os.Getenv("ARCHIPELAGO_BUILD_TAGS") == "" {
		os.Setenv("ARCHIPELAGO_BUILD_TAGS", "ceph")
	}
	open := testbin.BlockerStores(b, "radosdbench", "radosd", func(testing.TB) []string {
		args := []string{"--pool", o.Pool, "--ceph-conf", o.CephConf, "--namespace", o.Namespace, "--nr-threads", "16"}
		if o.CephxID != "" {
			args = append(args, "--cephx-id", o.CephxID)
		}
		return args
	})
	var viaSeg store.Store // started by the first radosd sub-benchmark
	for _, c := range []struct {
		write bool
		depth int
	}{{true, 16}, {false, 16}, {true, 1}, {false, 1}} {
		write, depth := c.write, c.depth
		op := fmt.Sprintf("read/depth%d", depth)
		if write {
			op = fmt.Sprintf("write/depth%d", depth)
		}
		b.Run("aio/"+op, func(b *testing.B) {
			bufs := make([][]byte, depth)
			for i := range bufs {
				bufs[i] = pinnedBuf(b, size)
			}
			sem := make(chan int, depth)
			for i := range depth {
				sem <- i
			}
			var wg sync.WaitGroup
			start := time.Now()
			for range b.N {
				slot := <-sem
				wg.Add(1)
				name, off := obj(rand.IntN(objects)), int64(rand.IntN(objSize/size))*size
				var err error
				if write {
					err = direct.WriteAsync(name, bufs[slot], off, func(err error) {
						if err != nil {
							b.Error(err)
						}
						sem <- slot
						wg.Done()
					})
				} else {
					err = direct.ReadAsync(name, bufs[slot], off, func(_ int, err error) {
						if err != nil {
							b.Error(err)
						}
						sem <- slot
						wg.Done()
					})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
		})
		for _, l := range []struct {
			name string
			st   *store.Store
		}{{"sync", &direct0}, {"radosd", &viaSeg}} {
			b.Run(l.name+"/"+op, func(b *testing.B) {
				if *l.st == nil {
					*l.st = open(parent) // lives as long as the whole benchmark
				}
				st := *l.st
				var wg sync.WaitGroup
				work := make(chan struct{}, depth)
				start := time.Now()
				for range depth {
					wg.Add(1)
					go func() {
						defer wg.Done()
						p := make([]byte, size)
						for range work {
							name, off := obj(rand.IntN(objects)), int64(rand.IntN(objSize/size))*size
							var err error
							if write {
								err = st.WriteAt(b.Context(), name, p, off, false)
							} else {
								_, err = st.ReadAt(b.Context(), name, p, off)
							}
							if err != nil {
								b.Error(err) // and go on taking work: the sender must not block
							}
						}
					}()
				}
				for range b.N {
					work <- struct{}{}
				}
				close(work)
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
			})
		}
	}
}

func obj(i int) string { return fmt.Sprintf("bench_%04d", i) }

// pinnedBuf returns Go memory librados may keep using after the call
// that started an operation returns (the cgo rules want it pinned).
func pinnedBuf(b *testing.B, n int) []byte {
	p := make([]byte, n)
	var pin runtime.Pinner
	pin.Pin(&p[0])
	b.Cleanup(pin.Unpin)
	return p
}
