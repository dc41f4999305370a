package roles

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/nbd"
	"github.com/archipelago-go/archipelago/nbdexport"
)

// Nbdd is the block endpoint daemon (nbdd): every volume over NBD.
func Nbdd() *cobra.Command {
	var c daemon.CommonFlags
	var o nbdexport.Options
	cmd := &cobra.Command{
		Use:   "nbdd",
		Short: "Block endpoint: serves every volume by name over NBD",
		Long: `nbdd binds its ports of the segment (XSEGBD_START..XSEGBD_END) and serves every
volume over NBD on a Unix socket (and on a TCP address with --listen): the
export name is the volume's name; snapshots are read-only; block status shows
unwritten ranges as holes. QEMU reaches a volume at the URI that
'vlmc uri NAME' prints. It keeps the number of connected clients in
--clients-file so that 'archipelago stop' can refuse to stop under them.`,
		Example: `  nbdd --portno-start 0 --portno-end 15 --vlmcd-port 503 --socket /run/archipelago/nbd.sock
  nbdd --role nbd        # options from the configuration
  qemu-io -f raw nbd+unix:///vm1-disk?socket=/run/archipelago/nbd.sock -c 'read -P 0 0 4k'`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, r, err := c.FromConfig(cmd.Flags(), config.TypeNBDEndpoint)
			if err != nil {
				return err
			}
			if r != nil {
				if err := fromConfig(cmd.Flags(), &o, cfg, r); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			c.Setup(ctx)
			o.Peer = c.Options
			o.Peer.Logger = c.Logger(ctx)
			// nbdd's goroutines wait on sockets: its port loop must not
			// hold the process's processor in a futex sleep.
			o.Peer.Doorbell = true
			if c.CPUProfile == "" {
				// The bench scripts start nbdd through archipelago start.
				c.CPUProfile = os.Getenv("ARCHIPELAGO_NBDD_CPUPROFILE")
			}
			if c.CPUProfile != "" && daemon.HostedOf(ctx) != nil {
				// The profile is the process's: the host's --cpuprofile.
				o.Peer.Logger.Warn("hosted: no CPU profile of its own (the host's, --cpuprofile or $ARCHIPELAGO_HOST_CPUPROFILE, covers every role)", "cpuprofile", c.CPUProfile)
			} else if c.CPUProfile != "" {
				stop, err := daemon.StartCPUProfile(c.CPUProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			o.Ready = func() { daemon.Ready(ctx) }
			return run(ctx, o)
		},
	}
	c.Register(cmd.Flags(), "nbdd")
	fs := cmd.Flags()
	fs.IntVar(&o.VlmcdPort, "vlmcd-port", 503, "port of vlmcd")
	fs.StringVar(&o.Socket, "socket", "/run/archipelago/nbd.sock", "Unix socket to serve NBD on")
	fs.StringVar(&o.Listen, "listen", "", "also serve NBD on this TCP address (host:port)")
	fs.StringVar(&o.ClientsFile, "clients-file", "", "keep the number of connected clients in this file")
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", nbd.DefaultHandshakeTimeout, "drop a connection that has not finished the NBD handshake (TLS included) by then")
	fs.StringVar(&o.TLS.Mode, "tls", config.TLSOff, "TLS on the TCP address: off, or require (NBD_OPT_STARTTLS before any other option)")
	fs.StringVar(&o.TLS.Dir, "tls-dir", "/etc/archipelago/tls", "server-cert.pem, server-key.pem, ca-cert.pem (QEMU's tls-creds-x509 layout)")
	fs.BoolVar(&o.TLS.VerifyClients, "tls-verify-clients", true, "require a client certificate signed by ca-cert.pem")
	return cmd
}

// fromConfig takes what the flags did not set from role r of cfg.
func fromConfig(fs *pflag.FlagSet, o *nbdexport.Options, cfg *config.Config, r *config.Role) error {
	return daemon.ApplyRole(fs,
		daemon.FromRole("vlmcd-port", &o.VlmcdPort, r.VlmcdPort),
		daemon.FromRole("socket", &o.Socket, r.Socket),
		daemon.FromRole("listen", &o.Listen, r.Listen),
		daemon.FromRole("clients-file", &o.ClientsFile, cfg.ClientsFile(r.Name)),
		daemon.FromRole("handshake-timeout", &o.HandshakeTimeout, time.Duration(r.HandshakeTimeout)*time.Second),
		daemon.FromRole("tls", &o.TLS.Mode, r.TLS),
		daemon.FromRole("tls-dir", &o.TLS.Dir, r.TLSDir),
		daemon.FromRole("tls-verify-clients", &o.TLS.VerifyClients, r.TLSVerifyClients),
	)
}

// run serves until ctx ends or the endpoint fails; a role that is its own
// program (not hosted, daemon.WithHosted) also until SIGTERM or SIGINT
// (logged).
func run(ctx context.Context, o nbdexport.Options) error {
	if daemon.HostedOf(ctx) == nil {
		var stop func()
		ctx, stop = daemon.SignalContext(ctx, o.Peer.Logger)
		defer stop()
	}
	return nbdexport.Run(ctx, o)
}
