package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/sizes"
)

func newCreate(g *globals) *cobra.Command {
	var size, snap string
	cmd := &cobra.Command{
		Use:   "create NAME [--size SIZE] [--snap SNAP]",
		Short: "Create a blank volume, or a clone of a snapshot",
		Long: `create makes NAME: blank of --size, or a clone of the snapshot --snap (of its
size, or larger with --size; never smaller). At least one of them is needed.`,
		Example: `  vlmc create vm1-disk --size 10G
  vlmc create vm2-disk --snap debian-12-image
  vlmc create vm3-disk --snap debian-12-image --size 20480   # MiB`,
		Args: cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			if size == "" && snap == "" {
				return fmt.Errorf("volume %q: give --size, --snap or both: %w", args[0], errs.ErrInvalid)
			}
			var n uint64
			if size != "" {
				var err error
				if n, err = volumeSize(args[0], size); err != nil {
					return err
				}
			}
			return c.do(func(ctx context.Context) error {
				if snap == "" {
					return c.vc.Create(ctx, args[0], n)
				}
				return c.vc.Clone(ctx, snap, args[0], n)
			})
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "size: "+sizes.Help)
	cmd.Flags().StringVar(&snap, "snap", "", "snapshot to clone")
	return cmd
}
