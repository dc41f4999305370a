// Package loadgen is the segment load generator: it sends requests to a
// port from a number of goroutines and measures requests per second and
// round-trip times. `xseg load` runs it against live peers, and the peer
// runtime's benchmark (peer/bench_test.go) against a null peer.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// Stats is what a load run measured.
type Stats struct {
	Requests uint64        // answered with success
	Failed   uint64        // answered with an error a dying peer causes
	Elapsed  time.Duration //
	Median   time.Duration // round trip, of a sample
	P99      time.Duration
}

// Options are what Run sends.
type Options struct {
	Port  int     // destination port
	Op    xseg.Op // OpPing, OpRead, OpWrite, ...; the target is "load"
	Depth int     // requests in flight, one goroutine each
	Size  int     // buffer bytes per request (the reply must service them all)
	Count uint64  // stop after this many answered requests (0: when ctx ends)
}

// Run sends o.Op requests of o.Size bytes to port o.Port from o.Depth
// goroutines until ctx ends or o.Count requests were answered.
// Errors a dead or stopping peer causes (ErrPeerDied, ErrNoPeer,
// ErrShutdown) are counted and retried after a pause; any other error, or a
// reply whose serviced count is wrong, ends the run with that error. The
// statistics are those of the requests answered until then.
func Run(ctx context.Context, c *peer.Client, o Options) (Stats, error) {
	var st Stats
	var issued, done, failed atomic.Uint64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	dst, op, size, n := o.Port, o.Op, o.Size, o.Count
	for g := 0; g < o.Depth; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() { mu.Lock(); lat = append(lat, mine...); mu.Unlock() }()
			for ctx.Err() == nil {
				if n > 0 && issued.Add(1) > n {
					return
				}
				r, err := c.Alloc(size)
				if err != nil {
					if errors.Is(err, errs.ErrNoSpace) {
						issued.Add(^uint64(0))
						time.Sleep(time.Millisecond)
						continue
					}
					mu.Lock()
					firstErr = err
					mu.Unlock()
					cancel()
					return
				}
				r.SetOp(op)
				r.SetTarget("load")
				r.SetSize(uint64(size))
				t0 := time.Now()
				rep, err := c.Call(ctx, r, dst)
				if err == nil {
					err = rep.Err()
					if err == nil && rep.Serviced() != uint64(size) {
						err = fmt.Errorf("%v: serviced %d of %d: %w", rep, rep.Serviced(), size, errs.ErrCorrupt)
					}
					c.Put(rep)
				}
				switch {
				case err == nil:
					done.Add(1)
					if len(mine) < 1<<16 {
						mine = append(mine, time.Since(t0))
					}
				case ctx.Err() != nil:
					return
				case errs.PeerGone(err):
					failed.Add(1)
					issued.Add(^uint64(0)) // to be sent again
					time.Sleep(2 * time.Millisecond)
				default:
					mu.Lock()
					firstErr = err
					mu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	st.Elapsed = time.Since(start)
	st.Requests, st.Failed = done.Load(), failed.Load()
	if len(lat) > 0 {
		slices.Sort(lat)
		st.Median = lat[len(lat)/2]
		st.P99 = lat[len(lat)*99/100]
	}
	return st, firstErr
}
