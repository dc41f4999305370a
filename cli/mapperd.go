package cli

import (
	"os"

	"github.com/archipelago-go/archipelago/internal/daemon"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/composer"
	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/mapper"
	"github.com/archipelago-go/archipelago/volume"
)

// Mapperd is the mapper daemon: it owns the volume maps.
func Mapperd() *cobra.Command {
	var c daemon.CommonFlags
	var o volume.Options
	var bm, bb int
	cmd := &cobra.Command{
		Use:   "mapperd",
		Short: "Mapper: volume maps, copy-on-write, snapshots, clones, locks",
		Long: `mapperd serves the volume operations (create, clone, snapshot, remove, rename,
resize, info, list, open/close, lock/unlock) and translates volume ranges into
object ranges (MAPR, MAPW with copy-on-write). Maps and locks live in the
blocker at --blockerm-port, data objects in the blocker at --blockerb-port.
Locks are taken in the name of --host-id (HOST_ID): a host that restarts with
the same identity takes its locks back.`,
		Example: `  mapperd --portno-start 502 --blockerm-port 501 --blockerb-port 500 --host-id node1
  mapperd --role mapperd     # options from the configuration`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, r, err := c.FromConfig(cmd.Flags(), config.TypeMapperd)
			if err != nil {
				return err
			}
			if r != nil {
				fs := cmd.Flags()
				if !fs.Changed("blockerm-port") {
					bm = r.BlockerMPort
				}
				if !fs.Changed("blockerb-port") {
					bb = r.BlockerBPort
				}
				if !fs.Changed("host-id") {
					o.Owner = cfg.HostID
				}
			}
			if o.Owner == "" {
				o.Owner, _ = os.Hostname()
			}
			return c.RunUntilSignal(mapper.New(o, bm, bb))
		},
	}
	c.Register(cmd.Flags(), "mapperd")
	cmd.Flags().IntVar(&bm, "blockerm-port", 501, "port of the blocker holding maps and locks")
	cmd.Flags().IntVar(&bb, "blockerb-port", 500, "port of the blocker holding data objects")
	cmd.Flags().StringVar(&o.Owner, "host-id", "", "lock owner identity (default the hostname)")
	cmd.Flags().Uint32Var(&o.BlockSize, "block-size", 4<<20, "object size of new volumes in bytes")
	return cmd
}

// Vlmcd is the volume composer daemon.
func Vlmcd() *cobra.Command {
	var c daemon.CommonFlags
	var mp, bp int
	cmd := &cobra.Command{
		Use:   "vlmcd",
		Short: "Volume composer: volume READ/WRITE as parallel object I/O",
		Long: `vlmcd serves volume READ and WRITE: it asks the mapper at --mapper-port which
objects cover the range and sends one request per object to the blocker at
--blocker-port, in parallel and without copying. FLUSH waits for the volume's
writes in flight and makes them durable; SNAPSHOT holds the volume's writes
back while the mapper takes it. Other volume operations go to the mapper.`,
		Example: `  vlmcd --portno-start 503 --mapper-port 502 --blocker-port 500
  vlmcd --role vlmcd         # options from the configuration`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, r, err := c.FromConfig(cmd.Flags(), config.TypeVlmcd)
			if err != nil {
				return err
			}
			if r != nil {
				fs := cmd.Flags()
				if !fs.Changed("mapper-port") {
					mp = r.MapperPort
				}
				if !fs.Changed("blocker-port") {
					bp = r.BlockerPort
				}
			}
			return c.RunUntilSignal(composer.New(mp, bp))
		},
	}
	c.Register(cmd.Flags(), "vlmcd")
	cmd.Flags().IntVar(&mp, "mapper-port", 502, "port of the mapper")
	cmd.Flags().IntVar(&bp, "blocker-port", 500, "port of the data blocker")
	return cmd
}
