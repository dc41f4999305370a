package main

import (
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/metrics"
	"github.com/archipelago-go/archipelago/mapper"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volume"
)

// mapperdCommand is the mapper daemon: it owns the volume maps.
func mapperdCommand() *cobra.Command {
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
the same identity takes its locks back.

With --metrics-listen (a role's metrics_listen) it serves Prometheus metrics
at http://ADDR/metrics: the writes that waited for a volume's lock held by
another host, and how long (docs/metrics.md).`,
		Example: `  mapperd --portno-start 502 --blockerm-port 501 --blockerb-port 500 --host-id node1
  mapperd --role mapperd     # options from the configuration
  mapperd --role mapperd --metrics-listen 127.0.0.1:9571`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, r, err := c.FromConfig(cmd.Flags(), config.TypeMapperd)
			if err != nil {
				return err
			}
			if r != nil {
				err := daemon.ApplyRole(cmd.Flags(),
					daemon.FromRole("blockerm-port", &bm, r.BlockerMPort),
					daemon.FromRole("blockerb-port", &bb, r.BlockerBPort),
					daemon.FromRole("host-id", &o.Owner, cfg.HostID),
					daemon.FromRole("metrics-listen", &c.MetricsListen, r.MetricsListen),
				)
				if err != nil {
					return err
				}
			}
			if o.Owner == "" {
				o.Owner, _ = os.Hostname()
			}
			if c.PidFile != "" {
				// Beside the pidfile: RUN_DIR/<role>.intents (volume.Options.Intents).
				in, err := mapper.NewFileIntents(strings.TrimSuffix(c.PidFile, ".pid") + ".intents")
				if err != nil {
					return err
				}
				o.Intents = in
			}
			var waits metrics.LockWaits
			o.OnLockWait = waits.Begin
			c.Metrics = func(*peer.Peer) []prometheus.Collector { return []prometheus.Collector{&waits} }
			return c.RunUntilSignal(mapper.New(o, bm, bb))
		},
	}
	c.Register(cmd.Flags(), "mapperd")
	c.RegisterMetrics(cmd.Flags())
	cmd.Flags().IntVar(&bm, "blockerm-port", 501, "port of the blocker holding maps and locks")
	cmd.Flags().IntVar(&bb, "blockerb-port", 500, "port of the blocker holding data objects")
	cmd.Flags().StringVar(&o.Owner, "host-id", "", "lock owner identity (default the hostname)")
	cmd.Flags().Uint32Var(&o.BlockSize, "block-size", 4<<20, "object size of new volumes in bytes")
	return cmd
}
