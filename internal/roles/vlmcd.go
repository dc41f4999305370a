package roles

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/composer"
	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/metrics"
	"github.com/archipelago-go/archipelago/peer"
)

// Vlmcd is the volume composer daemon (vlmcd).
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
back while the mapper takes it. Other volume operations go to the mapper.

With --metrics-listen (a role's metrics_listen) it serves Prometheus metrics
at http://ADDR/metrics: every volume's I/O (operations, bytes, latency) and
the segment's heap, request pool and ports (docs/metrics.md).`,
		Example: `  vlmcd --portno-start 503 --mapper-port 502 --blocker-port 500
  vlmcd --role vlmcd         # options from the configuration
  vlmcd --role vlmcd --metrics-listen 127.0.0.1:9570`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, r, err := c.FromConfig(cmd.Flags(), config.TypeVlmcd)
			if err != nil {
				return err
			}
			if r != nil {
				err := daemon.ApplyRole(cmd.Flags(),
					daemon.FromRole("mapper-port", &mp, r.MapperPort),
					daemon.FromRole("blocker-port", &bp, r.BlockerPort),
					daemon.FromRole("metrics-listen", &c.MetricsListen, r.MetricsListen),
				)
				if err != nil {
					return err
				}
			}
			comp := composer.New(mp, bp)
			c.Metrics = func(p *peer.Peer) []prometheus.Collector {
				return []prometheus.Collector{comp.Stats(), metrics.Segment{Seg: p.Segment()}}
			}
			return c.Serve(cmd.Context(), comp)
		},
	}
	c.Register(cmd.Flags(), "vlmcd")
	c.RegisterMetrics(cmd.Flags())
	cmd.Flags().IntVar(&mp, "mapper-port", 502, "port of the mapper")
	cmd.Flags().IntVar(&bp, "blocker-port", 500, "port of the data blocker")
	return cmd
}
