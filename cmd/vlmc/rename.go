package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newRename(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rename NAME NEWNAME",
		Short:   "Rename a volume or snapshot",
		Example: "  vlmc rename vm1-disk vm1-old",
		Args:    cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error { return c.vc.Rename(ctx, args[0], args[1]) })
		}),
	}
}
