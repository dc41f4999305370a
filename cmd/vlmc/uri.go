package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
)

func newURI(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "uri NAME",
		Short: "Print the NBD URI under which QEMU and NBD clients reach the volume",
		Long: `uri prints the volume's NBD URI on the block endpoint's Unix socket; it stays
the same across archipelago restart, so a VM's QEMU reconnects to it.`,
		Example: `  vlmc uri vm1-disk
  qemu-system-x86_64 -drive file=$(vlmc uri vm1-disk),format=raw,cache=none ...`,
		Args: cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			if _, err := c.info(args[0]); err != nil {
				return err
			}
			eps := c.cfg.RolesOfType(config.TypeNBDEndpoint)
			if len(eps) == 0 {
				return fmt.Errorf("%s has no nbd_endpoint role: %w", c.cfg.Path, errs.ErrNotFound)
			}
			fmt.Fprintln(cmd.OutOrStdout(), nbduri.URI(eps[0].Socket, args[0]))
			return nil
		}),
	}
}
