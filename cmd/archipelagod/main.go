// Command archipelagod is the host process: it runs several roles of the
// configuration (file or RADOS blockers, mapperd, vlmcd, the NBD endpoint)
// as goroutines of one process, each exactly as its own program would run
// it with --role NAME. Run archipelagod --help for its options; archipelago
// start runs it for the roles of [PEERS] HOSTED.
package main

import (
	"errors"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := hostCommand().Execute(); err != nil {
		daemon.Fatal(err)
	}
}

// envCPUProfile names the CPU profile's file when --cpuprofile does not.
const envCPUProfile = "ARCHIPELAGO_HOST_CPUPROFILE"

// hostCommand is archipelagod's command.
func hostCommand() *cobra.Command {
	var configPath, cpuProfile string
	var names []string
	var gomaxprocs, logLevel int
	cmd := &cobra.Command{
		Use:   "archipelagod --role NAME [--role NAME]...",
		Short: "Host process: several roles of the configuration in one process",
		Long: `archipelagod runs the roles named by --role as goroutines of one process, each
with exactly the options its own program (filed, radosd, mapperd, vlmcd, nbdd)
takes with --role NAME --config PATH: its ports, pidfile (holding this
process's pid), sockets, log level and metrics endpoint. A request between two
of its roles is handed over in the process.

It starts the roles in the order given, each once the one before serves (its
ports bound, its pidfile written). At SIGTERM or SIGINT it stops them in the
reverse order, each as its program does (drain the requests in flight, unbind
the ports, remove the pidfile), and exits 0. If a role fails to start, it
stops those started and exits 1 naming the role; if a role stops on its own
while running, it stops the others and exits 1, for its supervisor to start
it again.

Its log lines, and every hosted role's, go to stderr; a role's carry
role=NAME. GOMAXPROCS is the process's, set by --gomaxprocs (the GOMAXPROCS
environment variable overrides it); so is the CPU profile (--cpuprofile, or
$ARCHIPELAGO_HOST_CPUPROFILE when archipelago start runs it).

Built without librados (the package archipelago), it cannot run a
rados_blocker role: it then runs /usr/lib/archipelago/rados/archipelagod, the
one of the package archipelago-rados, in its place (same pid, same options).`,
		Example: `  # the whole stack of /etc/archipelago/archipelago.conf in one process
  archipelagod --role blockerb --role blockerm --role mapperd --role vlmcd --role nbd
  # the roles of another configuration, all processors
  archipelagod --config /tmp/test.conf --role mapperd --role vlmcd --gomaxprocs 0
  # stop them, in the reverse order
  kill -TERM $(cat /run/archipelago/vlmcd.pid)    # every hosted role's pidfile names it`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := daemon.NewLogger(logLevel, os.Stderr)
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			hs, err := plan(cfg, configPath, names)
			var nc *needsCeph
			if errors.As(err, &nc) {
				if xerr := execCephHost(); xerr != nil {
					log.Debug("no archipelagod with radosd to run instead", "err", xerr)
				}
			}
			if err != nil {
				return err
			}
			if _, set := os.LookupEnv("GOMAXPROCS"); !set && gomaxprocs > 0 {
				runtime.GOMAXPROCS(gomaxprocs)
			}
			if cpuProfile == "" {
				// archipelago start runs it with --role options alone.
				cpuProfile = os.Getenv(envCPUProfile)
			}
			if cpuProfile != "" {
				stop, err := daemon.StartCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			ctx, stop := daemon.SignalContext(cmd.Context(), log)
			defer stop()
			log.Info("host process", "pid", os.Getpid(), "roles", len(hs), "gomaxprocs", runtime.GOMAXPROCS(0))
			return host(ctx, log, hs)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configPath, "config", "", "configuration file (default $ARCHIPELAGO_CONFIG or /etc/archipelago/archipelago.conf, else built in)")
	fs.StringArrayVar(&names, "role", nil, "run this role of the configuration (repeat: started in the order given, stopped in the reverse)")
	fs.IntVar(&gomaxprocs, "gomaxprocs", 2, "Go processors for the process (0: one per CPU; the GOMAXPROCS variable overrides)")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the whole process here until it stops")
	fs.IntVar(&logLevel, "log-level", 2, "the host's own messages: 0 errors, 1 warnings, 2 info, 3 debug (each role logs at its own)")
	return cmd
}
