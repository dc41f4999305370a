//go:build ceph

package roles

import (
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

func init() { commands[config.TypeRadosBlocker] = program{"radosd", Radosd} }

// Radosd is the RADOS blocker daemon (radosd): one RADOS object per
// object of a pool. It needs librados: build with -tags ceph.
func Radosd() *cobra.Command {
	var c daemon.CommonFlags
	var o radosstore.Options
	var ident string
	cmd := &cobra.Command{
		Use:   "radosd",
		Short: "RADOS blocker: serves objects as RADOS objects of a Ceph pool",
		Long: `radosd binds its ports of the segment and serves READ, WRITE, SYNC, FLUSH,
TRUNCATE, DELETE, COPY, INFO, ACQUIRE, RELEASE, HASH, LIST, LOCKOWNER,
LOCKWAIT and PING on the objects of --pool (in --namespace), with persistent
locks as objects of the namespace <namespace>.locks (archipelago.locks for
the default namespace). Every write is durable when answered: RADOS
acknowledges only what its OSDs committed. A lock belongs to its owner
(--ident, or the owner a request names), not to the RADOS client, so a
restarted radosd takes its locks back. It connects as client.<cephx-id>
with --ceph-conf; a monitor or OSD that does not answer within --op-timeout
fails the request instead of hanging it. Stop it with SIGTERM.`,
		Example: `  # serve pool "blocks" on port 1 of segment "archipelago"
  radosd --portno-start 1 --pool blocks --ceph-conf /etc/ceph/ceph.conf --cephx-id archipelago
  # serve role blockerb of /etc/archipelago/archipelago.conf (as archipelago start does)
  radosd --role blockerb`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, r, err := c.FromConfig(cmd.Flags(), config.TypeRadosBlocker)
			if err != nil {
				return err
			}
			if r != nil {
				err := daemon.ApplyRole(cmd.Flags(),
					daemon.FromRole("pool", &o.Pool, r.Pool),
					daemon.FromRole("ceph-conf", &o.CephConf, r.CephConf),
					daemon.FromRole("cephx-id", &o.CephxID, r.CephxID),
					daemon.FromRole("namespace", &o.Namespace, r.Namespace),
				)
				if err != nil {
					return err
				}
			}
			o.Logger = c.Logger(cmd.Context()) // as the peer's: log_level applies
			st, err := radosstore.Open(o)
			if err != nil {
				return err
			}
			defer st.Close()
			return c.Serve(cmd.Context(), blocker.New(st, ident))
		},
	}
	c.Register(cmd.Flags(), "radosd")
	// librados calls block in cgo; with one Go processor they would wait
	// for the runtime to hand the processor on. All CPUs, then.
	c.GoMaxProcs = 0
	cmd.Flags().Lookup("gomaxprocs").DefValue = "0"
	cmd.Flags().StringVar(&o.Pool, "pool", "archipelago", "RADOS pool of the objects")
	cmd.Flags().StringVar(&o.CephConf, "ceph-conf", "/etc/ceph/ceph.conf", "Ceph configuration file")
	cmd.Flags().StringVar(&o.CephxID, "cephx-id", "admin", `Ceph client id, without "client."`)
	cmd.Flags().StringVar(&o.Namespace, "namespace", "", "RADOS namespace of the objects (default: the pool's default namespace)")
	cmd.Flags().DurationVar(&o.OpTimeout, "op-timeout", radosstore.DefaultOpTimeout, "longest wait for a monitor or an OSD")
	cmd.Flags().StringVar(&ident, "ident", "", "lock owner when a request names none (default <hostname>_<pid>)")
	return cmd
}
