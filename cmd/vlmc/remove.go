package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newRemove(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove [-f] NAME",
		Short: "Remove a volume or snapshot (data shared with others stays)",
		Long: `Remove a volume or snapshot. Data shared with snapshots and clones stays.
A volume in use on this host (NBD clients connected, mapped) is refused;
-f removes it anyway: the I/O of those connections fails from then on, also
after a volume of the same name is created.`,
		Example: "  vlmc remove vm1-disk\n  vlmc remove -f vm1-disk   # even with clients connected",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error {
				if force {
					return c.vc.RemoveForce(ctx, args[0])
				}
				return c.vc.Remove(ctx, args[0])
			})
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if in use on this host")
	return cmd
}
