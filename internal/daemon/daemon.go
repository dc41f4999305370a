// Package daemon is what every program of the project shares around the
// peer runtime: the common flags and their defaults from a role of the
// configuration, the logger at the seed's log levels, running a peer until
// SIGTERM or until a context ends (a role hosted with others in one
// process, WithHosted), and the one-line fatal error.
package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/metrics"
	"github.com/archipelago-go/archipelago/peer"
)

// NewLogger returns a text logger at one of the seed's log levels:
// 0 errors only, 1 warnings, 2 information, 3 debugging.
func NewLogger(level int, w io.Writer) *slog.Logger {
	l := slog.LevelInfo
	switch {
	case level <= 0:
		l = slog.LevelError
	case level == 1:
		l = slog.LevelWarn
	case level >= 3:
		l = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// CommonFlags are the command-line forms of the options every peer takes.
type CommonFlags struct {
	peer.Options
	LogLevel   int
	CPUProfile string
	ConfigPath string // --config
	RoleName   string // --role: take the options from this role of the config
	GoMaxProcs int    // --gomaxprocs

	// MetricsListen (--metrics-listen, a role's metrics_listen) is the
	// address of the Prometheus endpoint; "" for none. Metrics, set by
	// the programs that have one, gives the collectors of their own
	// families once the peer runs (build info and the Go runtime's are
	// always there).
	MetricsListen string
	Metrics       func(p *peer.Peer) []prometheus.Collector

	// Started, if set, is called once the peer serves, for work of the
	// program's own beside the requests (mapperd's periodic garbage
	// collection, its reaper of dead sessions); the function it returns,
	// if not nil, is called when the peer is to stop (SIGTERM, or Run's
	// context ended) and before it stops, to end that work: in a host
	// process nothing of a role may touch the segment after its peer
	// unmapped it.
	Started func(p *peer.Peer) (stop func())
}

// RegisterMetrics adds --metrics-listen to fs, for the programs that
// serve a Prometheus endpoint (docs/metrics.md).
func (c *CommonFlags) RegisterMetrics(fs *pflag.FlagSet) {
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (host:port; default none)")
}

// Setup applies the process-wide settings of the flags: GOMAXPROCS, unless
// the GOMAXPROCS environment variable sets it or the role runs hosted
// (ctx, WithHosted: the host sets it, once). A peer's work is a loop per
// port with requests handed over through the segment; one processor per
// peer avoids Go's own thread hand-offs on top of the peers' (measured on
// 2 cores with four peers and fio: 4K IOPS up by a third). It also takes
// the tuning of the port loops from the environment (Options.Wait,
// WaitFromEnv).
func (c *CommonFlags) Setup(ctx context.Context) {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && c.GoMaxProcs > 0 && HostedOf(ctx) == nil {
		runtime.GOMAXPROCS(c.GoMaxProcs)
	}
	c.Wait = WaitFromEnv()
}

// FromConfig loads the configuration when --role is given and fills the
// common options from the role and the [XSEG] section, except those set
// on the command line (through the same table as the program's own
// options, ApplyRole). It returns the config and the role (nil, nil
// without --role). want is the role type the program serves.
func (c *CommonFlags) FromConfig(fs *pflag.FlagSet, want string) (*config.Config, *config.Role, error) {
	if c.RoleName == "" {
		return nil, nil, nil
	}
	cfg, err := config.Load(c.ConfigPath)
	if err != nil {
		return nil, nil, err
	}
	r, ok := cfg.Role(c.RoleName)
	if !ok {
		return nil, nil, fmt.Errorf("%s: no role %q in the configuration: %w", cfg.Path, c.RoleName, errs.ErrNotFound)
	}
	if r.Type != want {
		return nil, nil, fmt.Errorf("%s: role %q is of type %s, this program serves %s: %w", cfg.Path, r.Name, r.Type, want, errs.ErrInvalid)
	}
	c.Role = r.Name
	table := []RoleSetting{
		FromRole("segment", &c.Segment, cfg.XSEG.Name),
		FromRole("portno-start", &c.PortStart, r.PortStart),
		FromRole("portno-end", &c.PortEnd, r.PortEnd),
		FromRole("nr-ops", &c.NrOps, r.NrOps),
		FromRole("log-level", &c.LogLevel, r.LogLevel),
		FromRole("pidfile", &c.PidFile, cfg.PidFile(r.Name)),
	}
	if r.NrThreads > 0 {
		table = append(table, FromRole("nr-threads", &c.NrThreads, r.NrThreads))
	}
	if err := ApplyRole(fs, table...); err != nil {
		return nil, nil, err
	}
	return cfg, r, nil
}

// Register adds the common flags to fs, with role's defaults.
func (c *CommonFlags) Register(fs *pflag.FlagSet, role string) {
	c.Role = role
	fs.StringVar(&c.RoleName, "role", "", "take the options from this role of the configuration")
	fs.StringVar(&c.ConfigPath, "config", "", "configuration file (default $ARCHIPELAGO_CONFIG or /etc/archipelago/archipelago.conf, else built in)")
	fs.StringVar(&c.Segment, "segment", "archipelago", "segment name (under /dev/shm)")
	fs.IntVar(&c.PortStart, "portno-start", 0, "first port to bind")
	fs.IntVar(&c.PortEnd, "portno-end", -1, "last port to bind (default: portno-start)")
	fs.IntVar(&c.NrOps, "nr-ops", 16, "requests in flight at most")
	fs.IntVar(&c.NrThreads, "nr-threads", 4, "workers serving requests")
	fs.IntVar(&c.LogLevel, "log-level", 2, "0 errors, 1 warnings, 2 info, 3 debug")
	fs.StringVar(&c.PidFile, "pidfile", "", "write the pid here while running")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile (pprof) here until the peer stops")
	fs.IntVar(&c.GoMaxProcs, "gomaxprocs", 1, "Go processors for this peer (0: one per CPU; the GOMAXPROCS variable overrides)")
}

// RunUntilSignal starts a peer with the flags' options and serves until
// SIGTERM or SIGINT, then stops it gracefully. Logs go to stderr.
func (c *CommonFlags) RunUntilSignal(h peer.Handler) error {
	ctx, stop := SignalContext(context.Background(), c.Logger(context.Background()))
	defer stop()
	return c.Run(ctx, h)
}

// Serve runs the peer of a role's program whose command runs under ctx
// (cobra's cmd.Context()): until ctx ends if the role is hosted
// (WithHosted: the host owns the signals), else also until SIGTERM or
// SIGINT.
func (c *CommonFlags) Serve(ctx context.Context, h peer.Handler) error {
	if HostedOf(ctx) == nil {
		var stop func()
		ctx, stop = SignalContext(ctx, c.Logger(ctx))
		defer stop()
	}
	return c.Run(ctx, h)
}

// Run starts a peer with the flags' options and serves until ctx ends,
// then stops it gracefully: Started's stop first, then the peer (drain,
// unbind, remove the pidfile), then the metrics endpoint. Logs go to
// stderr. Hosted (WithHosted), it tells the host once the peer serves,
// leaves GOMAXPROCS alone and takes no CPU profile (the host's flags
// do both).
func (c *CommonFlags) Run(ctx context.Context, h peer.Handler) error {
	c.Setup(ctx)
	opts := c.Options
	if opts.PortEnd < 0 {
		opts.PortEnd = opts.PortStart
	}
	opts.Logger = c.Logger(ctx)
	if c.CPUProfile != "" && HostedOf(ctx) != nil {
		opts.Logger.Warn("hosted: no CPU profile of its own (the host's, --cpuprofile or $ARCHIPELAGO_HOST_CPUPROFILE, covers every role)", "cpuprofile", c.CPUProfile)
	} else if c.CPUProfile != "" {
		stop, err := StartCPUProfile(c.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var ms *metrics.Server
	if c.MetricsListen != "" {
		// Bound before the peer starts: a busy address fails the start.
		var err error
		if ms, err = metrics.Listen(c.MetricsListen, opts.Logger); err != nil {
			return err
		}
		defer ms.Close()
	}
	p, err := peer.Start(opts, h)
	if err != nil {
		return err
	}
	if ms != nil {
		var cs []prometheus.Collector
		if c.Metrics != nil {
			cs = c.Metrics(p)
		}
		if err := ms.Serve(cs...); err != nil {
			p.Stop()
			return err
		}
	}
	var stop func()
	if c.Started != nil {
		stop = c.Started(p)
	}
	Ready(ctx)
	<-ctx.Done()
	if stop != nil {
		stop()
	}
	p.Stop()
	return nil
}

// Fatal prints err as one line on stderr, prefixed with the program name,
// and exits 1.
func Fatal(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", progName(), err)
	os.Exit(1)
}

func progName() string {
	n := os.Args[0]
	for i := len(n) - 1; i >= 0; i-- {
		if n[i] == '/' {
			return n[i+1:]
		}
	}
	return n
}

// StartCPUProfile writes a CPU profile (pprof) to path until the function
// it returns is called.
func StartCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
