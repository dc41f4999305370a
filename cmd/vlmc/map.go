package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/mapdev"
)

func newMap(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "map VOLUME",
		Short: "Map a volume or snapshot to a block device and print its path",
		Long: `map starts a map daemon for the volume, which serves it as a file of a FUSE
filesystem under RUN_DIR/mnt/<id>/ and attaches a loop device with direct I/O
to that file. The device's path (/dev/loopN) is printed once it is ready.
Snapshots are mapped read-only. The daemon's log is LOG_DIR/map-<id>.log.
Needs root, /dev/fuse and loop devices.`,
		Example: `  vlmc map vm1-disk                      # prints e.g. /dev/loop0
  mkfs.ext4 -q $(vlmc map vm1-disk)
  dev=$(vlmc map debian-12-image)        # a snapshot: read-only`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.config()
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			// The daemon is this program's map-serve, with the same
			// configuration file wherever it runs from.
			argv := []string{self}
			if g.cfgPath != "" {
				abs, _ := filepath.Abs(g.cfgPath)
				argv = append(argv, "--config", abs)
			}
			argv = append(argv, "map-serve", args[0])
			st, err := mapdev.Map(context.Background(), cfg, args[0], mapdev.MapOptions{Command: argv, Timeout: g.timeout})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), st.Device)
			return nil
		},
	}
}
