package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/internal/daemon"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/nbd"
	"github.com/archipelago-go/archipelago/nbdexport"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
)

// Nbdd is the block endpoint daemon: every volume over NBD.
func Nbdd() *cobra.Command {
	var c daemon.CommonFlags
	var vlmcd int
	var socket, listen, clientsFile string
	var tcp nbddTCP
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
				fs := cmd.Flags()
				if !fs.Changed("vlmcd-port") {
					vlmcd = r.VlmcdPort
				}
				if !fs.Changed("socket") {
					socket = r.Socket
				}
				if !fs.Changed("listen") {
					listen = r.Listen
				}
				if !fs.Changed("clients-file") {
					clientsFile = filepath.Join(cfg.RunDir, r.Name+".clients")
				}
				tcp.fromConfig(fs, r)
			}
			return runNbdd(&c, vlmcd, socket, listen, clientsFile, tcp)
		},
	}
	c.Register(cmd.Flags(), "nbdd")
	cmd.Flags().IntVar(&vlmcd, "vlmcd-port", 503, "port of vlmcd")
	cmd.Flags().StringVar(&socket, "socket", "/run/archipelago/nbd.sock", "Unix socket to serve NBD on")
	cmd.Flags().StringVar(&listen, "listen", "", "also serve NBD on this TCP address (host:port)")
	cmd.Flags().StringVar(&clientsFile, "clients-file", "", "keep the number of connected clients in this file")
	tcp.register(cmd.Flags())
	return cmd
}

// nbddTCP are nbdd's handshake timeout and the TLS policy of its TCP
// address (the Unix socket is guarded by its permissions).
type nbddTCP struct {
	handshakeTimeout time.Duration
	tls, tlsDir      string
	verifyClients    bool
}

func (n *nbddTCP) register(fs *pflag.FlagSet) {
	fs.DurationVar(&n.handshakeTimeout, "handshake-timeout", nbd.DefaultHandshakeTimeout, "drop a connection that has not finished the NBD handshake (TLS included) by then")
	fs.StringVar(&n.tls, "tls", config.TLSOff, "TLS on the TCP address: off, or require (NBD_OPT_STARTTLS before any other option)")
	fs.StringVar(&n.tlsDir, "tls-dir", "/etc/archipelago/tls", "server-cert.pem, server-key.pem, ca-cert.pem (QEMU's tls-creds-x509 layout)")
	fs.BoolVar(&n.verifyClients, "tls-verify-clients", true, "require a client certificate signed by ca-cert.pem")
}

// fromConfig takes what the flags did not set from role r.
func (n *nbddTCP) fromConfig(fs *pflag.FlagSet, r *config.Role) {
	if !fs.Changed("handshake-timeout") {
		n.handshakeTimeout = time.Duration(r.HandshakeTimeout) * time.Second
	}
	if !fs.Changed("tls") {
		n.tls = r.TLS
	}
	if !fs.Changed("tls-dir") {
		n.tlsDir = r.TLSDir
	}
	if !fs.Changed("tls-verify-clients") {
		n.verifyClients = r.TLSVerifyClients
	}
}

// policy returns the TLS policy of the TCP listener (nil: none), and
// warns of a TCP address anyone may use.
func (n *nbddTCP) policy(log *slog.Logger, l net.Listener) (*nbd.TLS, error) {
	var t *nbd.TLS
	switch n.tls {
	case config.TLSOff:
	case config.TLSRequire:
		cfg, err := nbd.LoadTLSDir(n.tlsDir, n.verifyClients)
		if err != nil {
			return nil, err
		}
		t = &nbd.TLS{Config: cfg, Require: true}
	default:
		return nil, fmt.Errorf("--tls %q: want %s or %s: %w", n.tls, config.TLSOff, config.TLSRequire, errs.ErrInvalid)
	}
	a, _ := l.Addr().(*net.TCPAddr)
	loopback := a != nil && a.IP.IsLoopback()
	switch {
	case t == nil && !loopback:
		log.Warn("NBD over TCP on a non-loopback address without TLS: whoever reaches it reads and writes every volume; set tls = require in the nbd_endpoint's section",
			"address", l.Addr().String())
	case t != nil && !n.verifyClients && !loopback:
		log.Warn("NBD over TLS without client certificates: whoever reaches the address reads and writes every volume; set tls_verify_clients = true",
			"address", l.Addr().String())
	}
	return t, nil
}

// refuse answers requests sent to the endpoint's ports: it serves NBD, not
// the segment.
var refuse = peer.HandlerFunc(func(_ context.Context, _ *peer.Peer, r *xseg.Request) error {
	return fmt.Errorf("the block endpoint serves no %s: %w", r.Op(), errs.ErrNotSupported)
})

func runNbdd(c *daemon.CommonFlags, vlmcd int, socket, listen, clientsFile string, tcp nbddTCP) error {
	c.Setup()
	opts := c.Options
	if opts.PortEnd < 0 {
		opts.PortEnd = opts.PortStart
	}
	opts.Logger = daemon.NewLogger(c.LogLevel, os.Stderr)
	// nbdd's goroutines wait on sockets: its port loop must not hold the
	// process's processor in a futex sleep.
	opts.Doorbell = true
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	// The sockets listen before the peer binds its ports: `archipelago
	// start` counts the endpoint started once its first port is bound, and
	// a client that connects right after start returns must find them.
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return err
	}
	// A socket left by a crash: remove it if nobody answers on it.
	if conn, err := net.Dial("unix", socket); err == nil {
		conn.Close()
		return fmt.Errorf("socket %s is served by another process: %w", socket, errs.ErrBusy)
	}
	os.Remove(socket)
	var ls []net.Listener
	ul, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	os.Chmod(socket, 0o660)
	ls = append(ls, ul)
	policies := []*nbd.TLS{nil}
	if listen != "" {
		tl, err := net.Listen("tcp", listen)
		if err != nil {
			ul.Close()
			return err
		}
		t, err := tcp.policy(opts.Logger, tl)
		if err != nil {
			ul.Close()
			tl.Close()
			return err
		}
		ls = append(ls, tl)
		policies = append(policies, t)
	}
	p, err := peer.Start(opts, refuse)
	if err != nil {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	defer p.Stop()
	srv := nbd.NewServer(nbdexport.New(volclient.New(p, vlmcd)), nbd.Options{MaxPayload: nbdexport.MaxIO, Logger: p.Logger(),
		HandshakeTimeout: tcp.handshakeTimeout})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, len(ls))
	for i, l := range ls {
		go func(l net.Listener, t *nbd.TLS) { errc <- srv.ServeTLS(ctx, l, t) }(l, policies[i])
		p.Logger().Info("serving NBD", "address", l.Addr().String(), "tls", policies[i] != nil)
	}
	if clientsFile != "" {
		go keepCount(ctx, srv, clientsFile)
		defer os.Remove(clientsFile)
	}
	got := 0
	select {
	case s := <-sig:
		p.Logger().Info("signal", "signal", s.String())
	case err = <-errc:
		got++
	}
	cancel()
	for ; got < len(ls); got++ {
		if e := <-errc; err == nil {
			err = e
		}
	}
	os.Remove(socket)
	return err
}

// keepCount writes the number of connected clients to path whenever it
// changes.
func keepCount(ctx context.Context, srv *nbd.Server, path string) {
	last := -1
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if n := srv.Clients(); n != last {
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte(strconv.Itoa(n)+"\n"), 0o644); err == nil {
				os.Rename(tmp, path)
				last = n
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
