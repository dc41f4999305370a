package main

import (
	"context"

	"github.com/spf13/cobra"
)

func init() { lifecycle = append(lifecycle, newRollback) }

func newRollback(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback NAME SNAPSHOT",
		Short: "Make a volume's content (and size) a snapshot's again",
		Long: `Revert the volume to the snapshot: what was written since is lost, and the
size becomes the snapshot's (resize after, if needed). SNAPSHOT must be of
the volume's history: one of its own snapshots, or its parent snapshot or
one taken before it.

Refused while the volume is in use on this host (mapped, NBD clients,
vlmc open or lock) and while another host holds its lock: reverting under
a mounted filesystem corrupts it. Unmap it first (and close it everywhere).
Connections that other hosts opened before fail from then on (EIO).`,
		Example: `  vlmc unmap /dev/nbd0 && vlmc rollback vm1-disk vm1-disk-2026-11-25`,
		Args:    cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			return c.do(func(ctx context.Context) error { return c.vc.Rollback(ctx, args[0], args[1]) })
		}),
	}
}
