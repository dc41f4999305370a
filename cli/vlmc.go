package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
	"github.com/archipelago-go/archipelago/volclient"
)

// vlmcEnv is what every vlmc command shares: the configuration and, once
// dialled, a client port on the segment.
type vlmcEnv struct {
	cfgPath string
	timeout time.Duration
	cfg     *config.Config
	vc      *volclient.Client
}

func (v *vlmcEnv) dial() error {
	cfg, err := config.Load(v.cfgPath)
	if err != nil {
		return err
	}
	v.cfg = cfg
	rs := cfg.RolesOfType(config.TypeVlmcd)
	if len(rs) == 0 {
		return fmt.Errorf("%s has no vlmcd role: %w", cfg.Path, errs.ErrNotFound)
	}
	vc, err := volclient.Dial(cfg.XSEG.Name, rs[0].PortStart)
	if err != nil {
		return err
	}
	v.vc = vc
	return nil
}

func (v *vlmcEnv) close() {
	if v.vc != nil {
		v.vc.Disconnect()
	}
}

// call runs fn with a context that ends after --timeout.
func (v *vlmcEnv) call(fn func(ctx context.Context, vc *volclient.Client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	return fn(ctx, v.vc)
}

// volumeSize reads the --size of volume name (package sizes: MiB, or
// with a unit) and checks it against the largest volume, so that a typo
// never reaches vlmcd as another size.
func volumeSize(name, s string) (uint64, error) {
	n, err := sizes.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("volume %q: %w", name, err)
	}
	if n > volclient.MaxSize {
		return 0, fmt.Errorf("volume %q: size %s (%d bytes) beyond the limit of %s (%d bytes): %w",
			name, s, n, sizes.Format(volclient.MaxSize), volclient.MaxSize, errs.ErrTooLarge)
	}
	return n, nil
}

// VolumeJSON is what `vlmc info --json` and `vlmc list --json` print.
type VolumeJSON struct {
	Name      string `json:"name"`
	Size      uint64 `json:"size"`
	ReadOnly  bool   `json:"readonly"`
	Parent    string `json:"parent"`
	LockOwner string `json:"lock_owner"`
	BlockSize uint32 `json:"block_size"`
	Epoch     uint64 `json:"epoch"`
}

func (v *vlmcEnv) info(name string) (VolumeJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	vi, err := v.vc.Info(ctx, name)
	return VolumeJSON{Name: name, Size: vi.Size, ReadOnly: vi.ReadOnly, Parent: vi.Parent,
		LockOwner: vi.LockOwner, BlockSize: vi.BlockSize, Epoch: vi.Epoch}, err
}

func (v *vlmcEnv) list() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	return v.vc.List(ctx)
}

// Vlmc is the `vlmc` command: volumes for the operator.
func Vlmc() *cobra.Command {
	env := &vlmcEnv{}
	root := &cobra.Command{
		Use:   "vlmc",
		Short: "Create, snapshot, clone, inspect, lock and map Archipelago volumes",
		Long: `vlmc talks to the running peers (see archipelago start) through the segment.
Sizes are in MiB as in the original, or with a unit B, K, M, G, T, P, E\n(powers of 1024; KB, KiB mean the same): 512M, 10G, 1T. Anything else is refused.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&env.cfgPath, "config", "", "configuration file")
	root.PersistentFlags().DurationVar(&env.timeout, "timeout", 5*time.Minute, "give up on an answer after this long")
	with := func(fn func(cmd *cobra.Command, args []string) error) func(cmd *cobra.Command, args []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if err := env.dial(); err != nil {
				return err
			}
			defer env.close()
			return fn(cmd, args)
		}
	}

	var size, snap string
	create := &cobra.Command{
		Use:   "create NAME [--size SIZE] [--snap SNAP]",
		Short: "Create a blank volume, or a clone of a snapshot",
		Long: `create makes NAME: blank of --size, or a clone of the snapshot --snap (of its
size, or larger with --size; never smaller). At least one of them is needed.`,
		Example: `  vlmc create vm1-disk --size 10G
  vlmc create vm2-disk --snap debian-12-image
  vlmc create vm3-disk --snap debian-12-image --size 20480   # MiB`,
		Args: cobra.ExactArgs(1),
		RunE: with(func(cmd *cobra.Command, args []string) error {
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
			return env.call(func(ctx context.Context, vc *volclient.Client) error {
				if snap == "" {
					return vc.Create(ctx, args[0], n)
				}
				return vc.Clone(ctx, snap, args[0], n)
			})
		}),
	}
	create.Flags().StringVar(&size, "size", "", "size: "+sizes.Help)
	create.Flags().StringVar(&snap, "snap", "", "snapshot to clone")

	snapshot := &cobra.Command{
		Use:     "snapshot VOLUME SNAPSHOT",
		Short:   "Take a read-only snapshot of a volume",
		Example: "  vlmc snapshot vm1-disk vm1-disk-2026-11-25",
		Args:    cobra.ExactArgs(2),
		RunE: with(func(cmd *cobra.Command, args []string) error {
			return env.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Snapshot(ctx, args[0], args[1]) })
		}),
	}
	var forceRemove bool
	remove := &cobra.Command{
		Use:   "remove [-f] NAME",
		Short: "Remove a volume or snapshot (data shared with others stays)",
		Long: `Remove a volume or snapshot. Data shared with snapshots and clones stays.
A volume in use on this host (NBD clients connected, mapped) is refused;
-f removes it anyway: the I/O of those connections fails from then on, also
after a volume of the same name is created.`,
		Example: "  vlmc remove vm1-disk\n  vlmc remove -f vm1-disk   # even with clients connected",
		Args:    cobra.ExactArgs(1),
		RunE: with(func(cmd *cobra.Command, args []string) error {
			return env.call(func(ctx context.Context, vc *volclient.Client) error {
				if forceRemove {
					return vc.RemoveForce(ctx, args[0])
				}
				return vc.Remove(ctx, args[0])
			})
		}),
	}
	remove.Flags().BoolVarP(&forceRemove, "force", "f", false, "remove even if in use on this host")
	var asJSON bool
	list := &cobra.Command{
		Use:     "list [--json]",
		Short:   "List volumes and snapshots, one name per line",
		Example: "  vlmc list\n  vlmc list --json | jq '.[] | select(.readonly)'",
		Args:    cobra.NoArgs,
		RunE: with(func(cmd *cobra.Command, args []string) error {
			names, err := env.list()
			if err != nil {
				return err
			}
			if !asJSON {
				for _, n := range names {
					fmt.Fprintln(cmd.OutOrStdout(), n)
				}
				return nil
			}
			out := []VolumeJSON{}
			for _, n := range names {
				vi, err := env.info(n)
				if errors.Is(err, errs.ErrNotFound) {
					continue // removed meanwhile
				}
				if err != nil {
					return err
				}
				out = append(out, vi)
			}
			return printJSON(cmd.OutOrStdout(), out)
		}),
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON with name, size, readonly, parent, lock_owner")
	info := &cobra.Command{
		Use:     "info NAME [--json]",
		Short:   "Show a volume's size, kind, parent, epoch and lock owner",
		Example: "  vlmc info vm1-disk\n  vlmc info --json vm1-disk",
		Args:    cobra.ExactArgs(1),
		RunE: with(func(cmd *cobra.Command, args []string) error {
			vi, err := env.info(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vi)
			}
			kind := "volume (read-write)"
			if vi.ReadOnly {
				kind = "snapshot (read-only)"
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "name:       %s\n", vi.Name)
			fmt.Fprintf(w, "size:       %s (%d bytes)\n", sizes.Format(vi.Size), vi.Size)
			fmt.Fprintf(w, "kind:       %s\n", kind)
			fmt.Fprintf(w, "parent:     %s\n", orNone(vi.Parent))
			fmt.Fprintf(w, "block size: %s\n", sizes.Format(uint64(vi.BlockSize)))
			fmt.Fprintf(w, "epoch:      %d\n", vi.Epoch)
			fmt.Fprintf(w, "locked by:  %s\n", orNone(vi.LockOwner))
			return nil
		}),
	}
	info.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	simple := func(use, short, example string, op func(vc *volclient.Client, ctx context.Context, name string) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Example: example, Args: cobra.ExactArgs(1),
			RunE: with(func(cmd *cobra.Command, args []string) error {
				return env.call(func(ctx context.Context, vc *volclient.Client) error { return op(vc, ctx, args[0]) })
			}),
		}
	}
	open := simple("open NAME", "Open a volume on this host: take its lock (succeeds if already ours)", "  vlmc open vm1-disk", (*volclient.Client).Open)
	closeCmd := simple("close NAME", "Close a volume: release its lock", "  vlmc close vm1-disk", (*volclient.Client).Close)
	lock := simple("lock NAME", "Lock a volume for this host (idempotent for the holder)", "  vlmc lock vm1-disk", (*volclient.Client).Lock)
	var forceUnlock bool
	unlock := simple("unlock [-f] NAME", "Unlock a volume; -f breaks another host's lock", "  vlmc unlock vm1-disk\n  vlmc unlock -f vm1-disk   # after the holder crashed for good", func(vc *volclient.Client, ctx context.Context, name string) error {
		if forceUnlock {
			return vc.UnlockForce(ctx, name)
		}
		return vc.Unlock(ctx, name)
	})
	unlock.Flags().BoolVarP(&forceUnlock, "force", "f", false, "break a lock held by another owner")

	rename := &cobra.Command{
		Use:     "rename NAME NEWNAME",
		Short:   "Rename a volume or snapshot",
		Example: "  vlmc rename vm1-disk vm1-old",
		Args:    cobra.ExactArgs(2),
		RunE: with(func(cmd *cobra.Command, args []string) error {
			return env.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Rename(ctx, args[0], args[1]) })
		}),
	}
	var forceShrink bool
	resize := &cobra.Command{
		Use:     "resize NAME --size SIZE [--force]",
		Short:   "Grow a volume (shrink only with --force: data past the end is lost)",
		Example: "  vlmc resize vm1-disk --size 20G",
		Args:    cobra.ExactArgs(1),
		RunE: with(func(cmd *cobra.Command, args []string) error {
			if size == "" {
				return fmt.Errorf("volume %q: --size is required: %w", args[0], errs.ErrInvalid)
			}
			n, err := volumeSize(args[0], size)
			if err != nil {
				return err
			}
			return env.call(func(ctx context.Context, vc *volclient.Client) error {
				if forceShrink {
					return vc.ResizeForce(ctx, args[0], n)
				}
				return vc.Resize(ctx, args[0], n)
			})
		}),
	}
	resize.Flags().StringVar(&size, "size", "", "new size: "+sizes.Help)
	resize.Flags().BoolVar(&forceShrink, "force", false, "allow shrinking")

	uri := &cobra.Command{
		Use:   "uri NAME",
		Short: "Print the NBD URI under which QEMU and NBD clients reach the volume",
		Long: `uri prints the volume's NBD URI on the block endpoint's Unix socket; it stays
the same across archipelago restart, so a VM's QEMU reconnects to it.`,
		Example: `  vlmc uri vm1-disk
  qemu-system-x86_64 -drive file=$(vlmc uri vm1-disk),format=raw,cache=none ...`,
		Args: cobra.ExactArgs(1),
		RunE: with(func(cmd *cobra.Command, args []string) error {
			if _, err := env.info(args[0]); err != nil {
				return err
			}
			eps := env.cfg.RolesOfType(config.TypeNBDEndpoint)
			if len(eps) == 0 {
				return fmt.Errorf("%s has no nbd_endpoint role: %w", env.cfg.Path, errs.ErrNotFound)
			}
			fmt.Fprintln(cmd.OutOrStdout(), nbduri.URI(eps[0].Socket, args[0]))
			return nil
		}),
	}
	root.AddCommand(create, snapshot, remove, list, info, open, closeCmd, lock, unlock, rename, resize, uri)
	root.AddCommand(vlmcMapCommands(env)...)
	return root
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
