package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newSnapshot(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "snapshot VOLUME SNAPSHOT",
		Short:   "Take a read-only snapshot of a volume",
		Example: "  vlmc snapshot vm1-disk vm1-disk-2026-11-25",
		Args:    cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error { return c.vc.Snapshot(ctx, args[0], args[1]) })
		}),
	}
}
