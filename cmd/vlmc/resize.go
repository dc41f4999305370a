package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/sizes"
)

func newResize(g *globals) *cobra.Command {
	var size string
	var force bool
	cmd := &cobra.Command{
		Use:     "resize NAME --size SIZE [--force]",
		Short:   "Grow a volume (shrink only with --force: data past the end is lost)",
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
			return c.do(func(ctx context.Context) error {
				if force {
					return c.vc.ResizeForce(ctx, args[0], n)
				}
				return c.vc.Resize(ctx, args[0], n)
			})
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "new size: "+sizes.Help)
	cmd.Flags().BoolVar(&force, "force", false, "allow shrinking")
	return cmd
}
