package roles

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/metrics"
	"github.com/archipelago-go/archipelago/mapper"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volume"
)

// Mapperd is the mapper daemon (mapperd): it owns the volume maps.
func Mapperd() *cobra.Command {
	var c daemon.CommonFlags
	var o volume.Options
	var bm, bb int
	var gcEvery time.Duration
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
another host, and how long (docs/metrics.md).

With --gc-interval (GC_INTERVAL of [ARCHIPELAGO]) it collects garbage every
interval, jittered by a quarter either way, as vlmc gc does (docs/gc.md): a
collection that fails is logged and tried again at the next interval; one
running on another host (the pool's collector lock) is skipped, at level info.`,
		Example: `  mapperd --portno-start 502 --blockerm-port 501 --blockerb-port 500 --host-id node1
  mapperd --role mapperd     # options from the configuration
  mapperd --role mapperd --metrics-listen 127.0.0.1:9571
  mapperd --role mapperd --gc-interval 24h`,
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
					daemon.FromRole("gc-interval", &gcEvery, cfg.GCInterval),
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
			if gcEvery < 0 {
				return fmt.Errorf("--gc-interval %v: negative: %w", gcEvery, errs.ErrInvalid)
			}
			m := mapper.New(o, bm, bb)
			c.Started = func(p *peer.Peer) func() {
				stopGC := func() {}
				if gcEvery > 0 {
					stopGC = m.CollectEvery(p, gcEvery)
				}
				// Before the peer stops: the collector and the reaper
				// must not reach the segment after it is unmapped.
				return func() { stopGC(); m.Close() }
			}
			return c.Serve(cmd.Context(), m)
		},
	}
	c.Register(cmd.Flags(), "mapperd")
	c.RegisterMetrics(cmd.Flags())
	cmd.Flags().IntVar(&bm, "blockerm-port", 501, "port of the blocker holding maps and locks")
	cmd.Flags().IntVar(&bb, "blockerb-port", 500, "port of the blocker holding data objects")
	cmd.Flags().StringVar(&o.Owner, "host-id", "", "lock owner identity (default the hostname)")
	cmd.Flags().Uint32Var(&o.BlockSize, "block-size", 4<<20, "object size of new volumes in bytes")
	cmd.Flags().DurationVar(&gcEvery, "gc-interval", 0, "collect garbage every this long (jittered; 0: never)")
	return cmd
}
