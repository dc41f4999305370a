package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/mapdev"
)

func newUnmap(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unmap DEVICE|ID|VOLUME",
		Short: "Detach a mapped block device and stop its map daemon",
		Long: `unmap detaches the loop device (refusing while it is mounted or otherwise in
use), stops the map daemon, which flushes the volume and unmounts its FUSE
filesystem, and removes the mapping's record. It also cleans up after a
map daemon that died.`,
		Example: `  vlmc unmap /dev/loop0
  vlmc unmap vm1-disk
  vlmc unmap 0            # by id, as vlmc showmapped lists it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.config()
			if err != nil {
				return err
			}
			return mapdev.Unmap(context.Background(), cfg, args[0])
		},
	}
}
