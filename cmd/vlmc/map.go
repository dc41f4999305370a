package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/mapdev"
)

func newMap(g *globals) *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "map VOLUME | --from FILE",
		Short: "Map a volume or snapshot to a block device and print its path",
		Long: `map starts a map daemon for the volume, which serves it as a file of a FUSE
filesystem under RUN_DIR/mnt/<id>/ and attaches a loop device with direct I/O
to that file. The device's path (/dev/loopN) is printed once it is ready.
Snapshots are mapped read-only. The daemon's log is LOG_DIR/map-<id>.log.
Needs root, /dev/fuse and loop devices.

With --from FILE, map maps every volume the file lists (one per line; # starts
a comment; blank lines are skipped; /etc/archipelago/vlmcmap is the list that
archipelago-map.service maps at boot), in order, and prints one line per
volume: "VOLUME DEVICE mapped" or "VOLUME DEVICE already-mapped" (a volume
mapped already is fine). A volume that cannot be mapped is reported on stderr
and the others are still mapped; the exit status is then non-zero.`,
		Example: `  vlmc map vm1-disk                      # prints e.g. /dev/loop0
  mkfs.ext4 -q $(vlmc map vm1-disk)
  dev=$(vlmc map debian-12-image)        # a snapshot: read-only
  vlmc map --from /etc/archipelago/vlmcmap`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.config()
			if err != nil {
				return err
			}
			if from != "" {
				vols, err := readVolumeList(from)
				if err != nil {
					return err
				}
				return mapAll(g, cfg, vols, cmd.OutOrStdout(), cmd.ErrOrStderr(), from)
			}
			st, err := mapOne(g, cfg, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), st.Device)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "map every volume listed in this file (one per line, # comments)")
	return cmd
}

// mapOne maps volume through mapdev.Map with vlmc's map-serve as the
// daemon.
func mapOne(g *globals, cfg *config.Config, volume string) (mapdev.State, error) {
	self, err := os.Executable()
	if err != nil {
		return mapdev.State{}, err
	}
	// The daemon is this program's map-serve, with the same
	// configuration file wherever it runs from.
	argv := []string{self}
	if g.cfgPath != "" {
		abs, _ := filepath.Abs(g.cfgPath)
		argv = append(argv, "--config", abs)
	}
	argv = append(argv, "map-serve", volume)
	return mapdev.Map(context.Background(), cfg, volume, mapdev.MapOptions{Command: argv, Timeout: g.timeout})
}

// mapAll maps each of vols that is not mapped yet (a record whose daemon
// died is cleaned up first), reporting each on out (errors on errOut);
// it fails if any could not be mapped.
func mapAll(g *globals, cfg *config.Config, vols []string, out, errOut io.Writer, from string) error {
	failed := 0
	for _, v := range vols {
		if dev, ok, err := mappedDevice(cfg, v); err != nil {
			fmt.Fprintf(errOut, "%s: %v\n", v, err)
			failed++
			continue
		} else if ok {
			fmt.Fprintf(out, "%s %s already-mapped\n", v, dev)
			continue
		}
		st, err := mapOne(g, cfg, v)
		if err != nil {
			fmt.Fprintf(errOut, "%s: %v\n", v, err)
			failed++
			continue
		}
		fmt.Fprintf(out, "%s %s mapped\n", v, st.Device)
	}
	if failed > 0 {
		return fmt.Errorf("%s: %d of %d volume(s) not mapped (see above)", from, failed, len(vols))
	}
	return nil
}

// mappedDevice says whether volume is mapped (its daemon alive and its
// device attached) and where. The records of its mappings whose daemon
// died are removed (mapdev.Unmap cleans them up), so that it can be
// mapped again; one detached by hand is an error (unmap it first).
func mappedDevice(cfg *config.Config, volume string) (string, bool, error) {
	ms, err := mapdev.List(cfg)
	if err != nil {
		return "", false, err
	}
	for _, m := range ms {
		if m.Volume != volume {
			continue
		}
		switch m.Status {
		case "mapped":
			return m.Device, true, nil
		case "dead":
			if err := mapdev.Unmap(context.Background(), cfg, fmt.Sprint(m.ID)); err != nil && !errors.Is(err, errs.ErrNotFound) {
				return "", false, fmt.Errorf("its mapping %d, whose daemon died: %w", m.ID, err)
			}
		default:
			return "", false, fmt.Errorf("mapping %d (%s) is %s: 'vlmc unmap %d' first: %w", m.ID, m.Device, m.Status, m.ID, errs.ErrBusy)
		}
	}
	return "", false, nil
}

// readVolumeList reads a list of volumes: one per line, # starts a
// comment (whole line or after the name), blank lines skipped. A line
// with more than one word is an error naming file:line.
func readVolumeList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var vols []string
	var bad []error
	sc := bufio.NewScanner(f)
	for no := 1; sc.Scan(); no++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		words := strings.Fields(line)
		switch len(words) {
		case 0:
		case 1:
			vols = append(vols, words[0])
		default:
			bad = append(bad, fmt.Errorf("%s:%d: %q: one volume name per line: %w", path, no, strings.TrimSpace(line), errs.ErrInvalid))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(bad) > 0 {
		return nil, errors.Join(bad...)
	}
	return vols, nil
}
