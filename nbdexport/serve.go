package nbdexport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/nbd"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
)

// Options are what Run serves: the nbdd command's flags.
type Options struct {
	// Peer are the endpoint's ports of the segment (PortEnd < 0: only
	// PortStart) and its logger (nil: slog.Default). nbdd sets Doorbell:
	// its goroutines wait on sockets, and its port loop must not hold the
	// process's processor in a futex sleep.
	Peer peer.Options
	// VlmcdPort is the port of vlmcd, which serves the volumes.
	VlmcdPort int
	// Socket is the Unix socket NBD is served on (created 0660, its
	// directory if missing; required).
	Socket string
	// Listen is a TCP address (host:port) NBD is served on too ("": none).
	Listen string
	// TLS is the TLS policy of the TCP address (the Unix socket is guarded
	// by its permissions).
	TLS TLSOptions
	// HandshakeTimeout drops a connection that has not finished the NBD
	// handshake (TLS included) by then (0: nbd's default).
	HandshakeTimeout time.Duration
	// ClientsFile, if set, holds the number of connected clients while
	// Run serves (config.ClientsFile names it for a role): `archipelago
	// stop` refuses to stop the endpoint under them.
	ClientsFile string
	// Ready, if set, is called once Run serves: its sockets listen, its
	// ports are bound and its pidfile is written (a host process running
	// several roles starts the next one then).
	Ready func()
}

// TLSOptions are the TLS policy of the TCP address.
type TLSOptions struct {
	// Mode is config.TLSOff, or config.TLSRequire: NBD_OPT_STARTTLS
	// before any other option.
	Mode string
	// Dir holds server-cert.pem, server-key.pem and ca-cert.pem (QEMU's
	// tls-creds-x509 layout).
	Dir string
	// VerifyClients requires a client certificate signed by ca-cert.pem.
	VerifyClients bool
}

// Run is the block endpoint (nbdd): it serves every volume vlmcd serves
// over NBD on o.Socket (and o.Listen) until ctx ends or a listener fails,
// then shuts down gracefully (requests in flight are answered), removes
// the socket and the clients file, and releases its ports.
//
// The sockets listen before the peer binds its ports: `archipelago start`
// counts the endpoint started once its first port is bound, and a client
// that connects right after start returns must find them. A socket left
// by a crash is removed; one that another process answers on is an
// errs.ErrBusy. Requests sent to the endpoint's ports are refused with
// errs.ErrNotSupported: it serves NBD, not the segment.
func Run(ctx context.Context, o Options) error {
	opts := o.Peer
	if opts.PortEnd < 0 {
		opts.PortEnd = opts.PortStart
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(o.Socket), 0o755); err != nil {
		return err
	}
	if conn, err := net.Dial("unix", o.Socket); err == nil {
		conn.Close()
		return fmt.Errorf("socket %s is served by another process: %w", o.Socket, errs.ErrBusy)
	}
	os.Remove(o.Socket)
	var ls []net.Listener
	ul, err := net.Listen("unix", o.Socket)
	if err != nil {
		return err
	}
	os.Chmod(o.Socket, 0o660)
	ls = append(ls, ul)
	policies := []*nbd.TLS{nil}
	if o.Listen != "" {
		tl, err := net.Listen("tcp", o.Listen)
		if err != nil {
			ul.Close()
			return err
		}
		t, err := o.TLS.policy(opts.Logger, tl)
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
	srv := nbd.NewServer(New(volclient.New(p, o.VlmcdPort)), nbd.Options{MaxPayload: MaxIO, Logger: p.Logger(),
		HandshakeTimeout: o.HandshakeTimeout})
	sctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, len(ls))
	for i, l := range ls {
		go func(l net.Listener, t *nbd.TLS) { errc <- srv.ServeTLS(sctx, l, t) }(l, policies[i])
		p.Logger().Info("serving NBD", "address", l.Addr().String(), "tls", policies[i] != nil)
	}
	if o.ClientsFile != "" {
		go keepCount(sctx, srv, o.ClientsFile)
		defer os.Remove(o.ClientsFile)
	}
	if o.Ready != nil {
		o.Ready()
	}
	got := 0
	select {
	case <-ctx.Done():
	case err = <-errc:
		got++
	}
	cancel()
	for ; got < len(ls); got++ {
		if e := <-errc; err == nil {
			err = e
		}
	}
	os.Remove(o.Socket)
	return err
}

// policy returns the TLS policy of the TCP listener l (nil: none), and
// warns of a TCP address anyone may use.
func (o TLSOptions) policy(log *slog.Logger, l net.Listener) (*nbd.TLS, error) {
	var t *nbd.TLS
	switch o.Mode {
	case config.TLSOff:
	case config.TLSRequire:
		cfg, err := nbd.LoadTLSDir(o.Dir, o.VerifyClients)
		if err != nil {
			return nil, err
		}
		t = &nbd.TLS{Config: cfg, Require: true}
	default:
		return nil, fmt.Errorf("--tls %q: want %s or %s: %w", o.Mode, config.TLSOff, config.TLSRequire, errs.ErrInvalid)
	}
	a, _ := l.Addr().(*net.TCPAddr)
	loopback := a != nil && a.IP.IsLoopback()
	switch {
	case t == nil && !loopback:
		log.Warn("NBD over TCP on a non-loopback address without TLS: whoever reaches it reads and writes every volume; set tls = require in the nbd_endpoint's section",
			"address", l.Addr().String())
	case t != nil && !o.VerifyClients && !loopback:
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

// keepCount writes the number of connected clients to path whenever it
// changes, until ctx ends.
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
