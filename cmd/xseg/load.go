package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/loadgen"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

func loadCmd() *cobra.Command {
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
			c, err := peer.DialWith(segmentName(cmd), daemon.ClientOptionsFromEnv())
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
			st, err := loadgen.Run(ctx, c, loadgen.Options{Port: port, Op: op, Depth: depth, Size: size, Count: count})
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
