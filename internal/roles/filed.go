package roles

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/store/filestore"
)

// Filed is the file blocker daemon (filed): one file per object under
// archip_dir.
func Filed() *cobra.Command {
	var c daemon.CommonFlags
	var o filestore.Options
	var ident string
	cmd := &cobra.Command{
		Use:   "filed",
		Short: "File blocker: serves objects as files under a directory",
		Long: `filed binds its ports of the segment and serves READ, WRITE, SYNC, FLUSH,
TRUNCATE, DELETE, COPY, INFO, ACQUIRE, RELEASE, HASH, LIST, LOCKOWNER,
LOCKWAIT and PING on files under --archip-dir (spread over subdirectories),
with persistent locks under --lock-dir. A write is durable when answered if
it carried FUA, otherwise once a later SYNC or FLUSH is answered. Stop it
with SIGTERM.`,
		Example: `  # serve data objects on port 1 of segment "archipelago"
  filed --portno-start 1 --archip-dir /var/lib/archipelago/data --nr-ops 64 --nr-threads 8
  # serve role blockerb of /etc/archipelago/archipelago.conf (as archipelago start does)
  filed --role blockerb`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, r, err := c.FromConfig(cmd.Flags(), config.TypeFileBlocker)
			if err != nil {
				return err
			}
			if r != nil {
				err := daemon.ApplyRole(cmd.Flags(),
					daemon.FromRole("archip-dir", &o.Dir, r.ArchipDir),
					daemon.FromRole("lock-dir", &o.LockDir, r.LockDir),
					daemon.FromRole("fdcache", &o.FDCache, r.FDCache),
					daemon.FromRole("direct", &o.Direct, r.Direct),
				)
				if err != nil {
					return err
				}
			}
			if o.FDCache == 0 {
				o.FDCache = filestore.NoFDCache // fdcache = 0: open the file for each I/O
			} else if o.FDCache < 0 {
				return fmt.Errorf("filed: --fdcache %d: negative: %w", o.FDCache, errs.ErrInvalid)
			}
			st, err := filestore.Open(o)
			if err != nil {
				return err
			}
			defer st.Close()
			// A READ or WRITE handed over in this process while nothing
			// else is in flight here is served in its submitter's
			// goroutine (peer.Options.InPlaceWhenIdle): a pread or a
			// pwrite is short, and the worker's hand-off is not.
			c.InPlaceWhenIdle = true
			return c.Serve(cmd.Context(), blocker.New(st, ident))
		},
	}
	c.Register(cmd.Flags(), "filed")
	cmd.Flags().StringVar(&o.Dir, "archip-dir", "/var/lib/archipelago/data", "directory holding the objects")
	cmd.Flags().StringVar(&o.LockDir, "lock-dir", "", "directory holding the locks (default <archip-dir>/locks)")
	cmd.Flags().IntVar(&o.FDCache, "fdcache", 64, "files kept open at most (0: none, each I/O opens its file)")
	cmd.Flags().BoolVar(&o.Direct, "direct", false, "use O_DIRECT for aligned I/O")
	cmd.Flags().StringVar(&ident, "ident", "", "lock owner when a request names none (default <hostname>_<pid>)")
	return cmd
}
