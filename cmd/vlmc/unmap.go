package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/mapdev"
)

func newUnmap(g *globals) *cobra.Command {
	var from string
	var all bool
	cmd := &cobra.Command{
		Use:   "unmap DEVICE|ID|VOLUME | --from FILE | --all",
		Short: "Detach a mapped block device and stop its map daemon",
		Long: `unmap detaches the loop device (refusing while it is mounted or otherwise in
use), stops the map daemon, which flushes the volume and unmounts its FUSE
filesystem, and removes the mapping's record. It also cleans up after a
map daemon that died.

With --from FILE it unmaps every mapping of the volumes the file lists (the
format of vlmc map --from), last listed first; with --all, every mapping. One
line per volume: "VOLUME DEVICE unmapped" or "VOLUME - not-mapped" (fine). A
mapping that cannot be unmapped (a mounted device) is reported on stderr and
the others are still unmapped; the exit status is then non-zero.`,
		Example: `  vlmc unmap /dev/loop0
  vlmc unmap vm1-disk
  vlmc unmap 0            # by id, as vlmc showmapped lists it
  vlmc unmap --from /etc/archipelago/vlmcmap
  vlmc unmap --all`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from != "" && all {
				return fmt.Errorf("--from and --all: give one")
			}
			if from != "" || all {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.config()
			if err != nil {
				return err
			}
			switch {
			case from != "":
				vols, err := readVolumeList(from)
				if err != nil {
					return err
				}
				slices.Reverse(vols)
				return unmapAll(cfg, vols, cmd.OutOrStdout(), cmd.ErrOrStderr(), from)
			case all:
				return unmapAll(cfg, nil, cmd.OutOrStdout(), cmd.ErrOrStderr(), "--all")
			}
			return mapdev.Unmap(context.Background(), cfg, args[0])
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "unmap the volumes listed in this file (one per line, # comments)")
	cmd.Flags().BoolVar(&all, "all", false, "unmap every mapped volume")
	return cmd
}

// unmapAll unmaps every mapping of each of vols, in that order (vols nil:
// every mapping, last mapped first), reporting each on out and errors on
// errOut; it fails if any could not be unmapped.
func unmapAll(cfg *config.Config, vols []string, out, errOut io.Writer, what string) error {
	ms, err := mapdev.List(cfg)
	if err != nil {
		return err
	}
	if vols == nil {
		seen := map[string]bool{}
		for i := len(ms) - 1; i >= 0; i-- {
			if !seen[ms[i].Volume] {
				seen[ms[i].Volume] = true
				vols = append(vols, ms[i].Volume)
			}
		}
	}
	failed, total := 0, 0
	for _, v := range vols {
		n := 0
		for i := len(ms) - 1; i >= 0; i-- {
			m := ms[i]
			if m.Volume != v {
				continue
			}
			n++
			total++
			if err := mapdev.Unmap(context.Background(), cfg, strconv.Itoa(m.ID)); err != nil {
				fmt.Fprintf(errOut, "%s: %v\n", v, err)
				failed++
				continue
			}
			fmt.Fprintf(out, "%s %s unmapped\n", v, m.Device)
		}
		if n == 0 {
			fmt.Fprintf(out, "%s - not-mapped\n", v)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%s: %d of %d mapping(s) not unmapped (see above)", what, failed, total)
	}
	return nil
}
