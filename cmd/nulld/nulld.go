package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// nulldCommand is the null peer: it answers every request at once with
// success.
func nulldCommand() *cobra.Command {
	var c daemon.CommonFlags
	var delay time.Duration
	cmd := &cobra.Command{
		Use:   "nulld",
		Short: "Null peer: answers every request at once",
		Example: `  # answer everything sent to port 3
  nulld --portno-start 3 --nr-ops 64 --nr-threads 1`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			var h peer.Handler = peer.Null
			if delay > 0 {
				h = peer.HandlerFunc(func(ctx context.Context, p *peer.Peer, r *xseg.Request) error {
					select {
					case <-time.After(delay):
					case <-ctx.Done():
						return ctx.Err()
					}
					return peer.Null.ServeInline(r)
				})
			}
			return c.RunUntilSignal(h)
		},
	}
	c.Register(cmd.Flags(), "nulld")
	cmd.Flags().DurationVar(&delay, "delay", 0, "wait this long before answering (for tests)")
	return cmd
}
