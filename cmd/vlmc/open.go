package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newOpen(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "open NAME",
		Short:   "Open a volume on this host: take its lock (succeeds if already ours)",
		Example: "  vlmc open vm1-disk",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error { return c.vc.Open(ctx, args[0]) })
		}),
	}
}
