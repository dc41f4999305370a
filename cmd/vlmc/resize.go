package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/mapdev"
)

func newResize(g *globals) *cobra.Command {
	var size string
	var force bool
	cmd := &cobra.Command{
		Use:   "resize NAME --size SIZE [--force]",
		Short: "Grow a volume (shrink only with --force: data past the end is lost)",
		Long: `Grow a volume (shrink only with --force: data past the end is lost).

A device that maps the volume on this host (vlmc map) takes the new size
without a remap: resize returns once /dev/loopN shows it. Devices mapping
it on other hosts follow within a few seconds. A mapped volume cannot be
shrunk: unmap it first.`,
		Example: "  vlmc resize vm1-disk --size 20G\n  vlmc resize vm1-disk --size 10G --force   # shrink: data past 10G is lost",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			if size == "" {
				return fmt.Errorf("volume %q: --size is required: %w", args[0], errs.ErrInvalid)
			}
			n, err := volumeSize(args[0], size)
			if err != nil {
				return err
			}
			// A device mapping the volume here shows the new size when
			// this returns; a shrink of a mapped volume is refused.
			return c.do(func(ctx context.Context) error {
				return mapdev.Resize(ctx, c.cfg, c.vc, args[0], n, force)
			})
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "new size: "+sizes.Help)
	cmd.Flags().BoolVar(&force, "force", false, "allow shrinking")
	return cmd
}
