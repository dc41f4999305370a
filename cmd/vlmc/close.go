package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newClose(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "close NAME",
		Short:   "Close a volume: release its lock",
		Example: "  vlmc close vm1-disk",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error { return c.vc.Close(ctx, args[0]) })
		}),
	}
}
