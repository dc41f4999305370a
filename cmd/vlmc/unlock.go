package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newUnlock(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "unlock [-f] NAME",
		Short:   "Unlock a volume; -f breaks another host's lock",
		Example: "  vlmc unlock vm1-disk\n  vlmc unlock -f vm1-disk   # after the holder crashed for good",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error {
				if force {
					return c.vc.UnlockForce(ctx, args[0])
				}
				return c.vc.Unlock(ctx, args[0])
			})
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "break a lock held by another owner")
	return cmd
}
