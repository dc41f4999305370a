package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/mapdev"
)

// envMapProfile names a file prefix: when set, the map daemon of mapping
// ID writes a CPU profile (pprof) to PREFIX.ID until it stops (for
// measurements; `vlmc map` passes its environment on to the daemon).
const envMapProfile = "ARCHIPELAGO_MAP_CPUPROFILE"

// newMapServe is the map daemon that `vlmc map` starts (mapdev.Map): it
// serves one mapping until SIGTERM. Its last words (an error) go to
// stderr, the log, through daemon.Fatal.
func newMapServe(g *globals) *cobra.Command {
	var id, lockFD int
	cmd := &cobra.Command{
		Use:    "map-serve VOLUME --id ID [--lock-fd FD]",
		Short:  "The map daemon of one mapping (vlmc map starts it)",
		Hidden: true,
		Example: `  vlmc map-serve vm1-disk --id 0    # in the foreground, for debugging
  vlmc unmap 0                       # from another shell`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if id < 0 {
				return fmt.Errorf("volume %q: --id is required: %w", name, errs.ErrInvalid)
			}
			// A signal during the setup undoes what is done; after it, unmaps.
			stop, unnotify := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer unnotify()
			signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
			cfg, err := g.config()
			if err != nil {
				return err
			}
			var lock *os.File
			if lockFD >= 0 {
				lock = os.NewFile(uintptr(lockFD), "mapping lock")
			}
			if p := os.Getenv(envMapProfile); p != "" {
				// For measurements: the daemon's CPU profile until it stops.
				stopProfile, err := daemon.StartCPUProfile(fmt.Sprintf("%s.%d", p, id))
				if err != nil {
					return err
				}
				defer stopProfile()
			}
			return mapdev.Serve(stop, cfg, name, mapdev.ServeOptions{ID: id, Lock: lock, Timeout: g.timeout,
				Client: daemon.ClientOptionsFromEnv()})
		},
	}
	cmd.Flags().IntVar(&id, "id", -1, "mapping id (reserved by vlmc map)")
	cmd.Flags().IntVar(&lockFD, "lock-fd", -1, "inherited descriptor holding the mapping's lock")
	return cmd
}
