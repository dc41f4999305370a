package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// LoadStats is what a load run measured.
type LoadStats struct {
	Requests uint64        // answered with success
	Failed   uint64        // answered with an error a dying peer causes
	Elapsed  time.Duration //
	Median   time.Duration // round trip, of a sample
	P99      time.Duration
}

// RunLoad sends op requests of size bytes to port dst from depth
// goroutines until ctx ends or n requests (0: no limit) were answered.
// Errors a dead or stopping peer causes (ErrPeerDied, ErrNoPeer,
// ErrShutdown) are counted and retried after a pause; any other error, or a
// reply whose serviced count is wrong, ends the run with that error.
func RunLoad(ctx context.Context, c *peer.Client, dst int, op xseg.Op, depth, size int, n uint64) (LoadStats, error) {
	var st LoadStats
	var issued, done, failed atomic.Uint64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < depth; g++ {
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

func xsegLoad(name *string) *cobra.Command {
	var port, depth, size int
	var count uint64
	var dur time.Duration
	var opName string
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Send requests to a port and report requests/s and round-trip times",
		Example: `  # 100000 PINGs at queue depth 32 to the peer on port 3
  xseg load --port 3 --depth 32 --count 100000
  # 4 KiB READs to the blocker on port 1 for 10 seconds
  xseg load --port 1 --op read --size 4096 --duration 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			op := map[string]xseg.Op{"ping": xseg.OpPing, "read": xseg.OpRead, "write": xseg.OpWrite}[opName]
			if op == xseg.OpNone {
				return fmt.Errorf("--op %q: want ping, read or write: %w", opName, errs.ErrInvalid)
			}
			c, err := peer.Dial(*name)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dur > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, dur)
				defer cancel()
			}
			st, err := RunLoad(ctx, c, port, op, depth, size, count)
			fmt.Fprintf(cmd.OutOrStdout(), "%d requests in %v: %.0f req/s, median %v, p99 %v, %d failed by dying peers\n",
				st.Requests, st.Elapsed.Round(time.Millisecond), float64(st.Requests)/st.Elapsed.Seconds(), st.Median, st.P99, st.Failed)
			return err
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "destination port")
	cmd.Flags().IntVar(&depth, "depth", 1, "requests in flight")
	cmd.Flags().IntVar(&size, "size", 0, "buffer bytes per request")
	cmd.Flags().Uint64Var(&count, "count", 0, "stop after this many requests (0: no limit)")
	cmd.Flags().DurationVar(&dur, "duration", 0, "stop after this long (0: no limit)")
	cmd.Flags().StringVar(&opName, "op", "ping", "ping, read or write")
	return cmd
}
