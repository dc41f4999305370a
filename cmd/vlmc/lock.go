package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newLock(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "lock NAME",
		Short:   "Lock a volume for this host (idempotent for the holder)",
		Example: "  vlmc lock vm1-disk",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error { return c.vc.Lock(ctx, args[0]) })
		}),
	}
}
