//go:build ceph

package radosstore_test

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/store/radosstore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// The ways a completion reaches its callback: through the store's queue
// (librados' callback thread, the eventfd, the drain goroutine: the
// default), or waited for on a goroutine of the operation's own (when it
// is alone in flight, with ARCHIPELAGO_RADOS_DIRECT_WAIT=1, or always).
var completionPaths = []struct {
	name  string
	below int32
}{{"queue", 0}, {"alone", 1}, {"direct", math.MaxInt32}}

// twoProcs makes GOMAXPROCS at least 2 until t ends: with 1, no
// operation waits on its own goroutine.
func twoProcs(t *testing.T) {
	if n := runtime.GOMAXPROCS(0); n < 2 {
		runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(n) })
	}
}

// TestAsync checks ReadAsync and WriteAsync (librados aio, what radosd
// serves READ and WRITE with) against the asynchronous contract, which
// memstore.Async passes too: the blocker's asynchronous path is tested
// without Ceph over that one. Each way a completion may take runs the
// whole suite.
func TestAsync(t *testing.T) {
	open := opener(t)
	for _, c := range completionPaths {
		t.Run(c.name, func(t *testing.T) {
			twoProcs(t)
			storetest.RunAsync(t, func(t *testing.T) *radosstore.Store {
				s := open(t).(*radosstore.Store)
				s.SetDirectWait(c.below)
				return s
			})
		})
	}
}

// TestAsyncCompletionPaths: on each way a completion may take, at depth 1
// and 8, every callback comes exactly once; a write's callback comes only
// once the write is in RADOS (another client reads it from the callback);
// a read's buffer holds the data when its callback comes and librados
// leaves it alone afterwards.
func TestAsyncCompletionPaths(t *testing.T) {
	o := cluster(t)
	o.Namespace = namespace(t, o)
	other, err := radosstore.Open(o) // another client of the cluster
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	const ops, size = 64, 4096
	for _, c := range completionPaths {
		for _, depth := range []int{1, 8} {
			t.Run(fmt.Sprintf("%s/depth%d", c.name, depth), func(t *testing.T) {
				twoProcs(t)
				s, err := radosstore.Open(o)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				s.SetDirectWait(c.below)
				name := func(i int) string { return fmt.Sprintf("%s-%d-%03d", c.name, depth, i) }
				data := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, size) }
				const scribble = 0xee
				var mu sync.Mutex
				var errs []error
				fail := func(format string, args ...any) {
					mu.Lock()
					errs = append(errs, fmt.Errorf(format, args...))
					mu.Unlock()
				}
				calls := make([]int, ops)
				bufs := make([][]byte, ops)
				for i := range bufs {
					bufs[i] = make([]byte, size)
				}
				// run starts ops operations, depth at a time, and waits for
				// every callback.
				run := func(start func(i int, done func()) error) {
					sem := make(chan struct{}, depth)
					var wg sync.WaitGroup
					for i := range ops {
						sem <- struct{}{}
						wg.Add(1)
						if err := start(i, func() {
							mu.Lock()
							calls[i]++
							mu.Unlock()
							<-sem
							wg.Done()
						}); err != nil {
							t.Fatalf("operation %d: %v", i, err)
						}
					}
					waited := make(chan struct{})
					go func() { wg.Wait(); close(waited) }()
					select {
					case <-waited:
					case <-time.After(time.Minute):
						t.Fatalf("callbacks missing after a minute: calls %v", calls)
					}
					for i, n := range calls {
						if n != 1 {
							t.Errorf("operation %d: %d callbacks", i, n)
						}
						calls[i] = 0
					}
				}
				run(func(i int, done func()) error {
					return s.WriteAsync(name(i), data(i), 0, func(err error) {
						defer done()
						if err != nil {
							fail("write %d: %v", i, err)
							return
						}
						p := make([]byte, size)
						if n, err := other.ReadAt(t.Context(), name(i), p, 0); err != nil || n != size || !bytes.Equal(p, data(i)) {
							fail("write %d called back before another client could read it: n=%d, %v", i, n, err)
						}
					})
				})
				run(func(i int, done func()) error {
					return s.ReadAsync(name(i), bufs[i], 0, func(n int, err error) {
						defer done()
						if err != nil || n != size || !bytes.Equal(bufs[i], data(i)) {
							fail("read %d: the buffer did not hold the data at the callback: n=%d, %v", i, n, err)
						}
						for k := range bufs[i] {
							bufs[i][k] = scribble
						}
					})
				})
				for _, err := range errs {
					t.Error(err)
				}
				for _, op := range []string{"write", "read"} { // more I/O: what a late copy would need
					run(func(i int, done func()) error {
						if op == "write" {
							return s.WriteAsync(name(i), data(i+1), 0, func(error) { done() })
						}
						return s.ReadAsync(name(i), make([]byte, size), 0, func(int, error) { done() })
					})
				}
				for i, p := range bufs {
					if !bytes.Equal(p, bytes.Repeat([]byte{scribble}, size)) {
						t.Fatalf("read %d: its buffer changed after its callback", i)
					}
				}
			})
		}
	}
}
