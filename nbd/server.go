package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// Options tune a Server. The zero value is usable.
type Options struct {
	// MaxInFlight bounds the requests of one connection being served or
	// waiting for their reply to be sent (default 64). The connection's
	// reader stops reading requests while the bound is reached.
	MaxInFlight int
	// MaxPayload is the largest READ or WRITE payload (default and upper
	// bound DefaultMaxPayload, 32 MiB). An export's BlockSizer may lower
	// it further.
	MaxPayload uint32
	// HandshakeTimeout bounds the handshake of a connection, from accept
	// to transmission: option haggling, a TLS handshake, and the opening
	// of the export (default DefaultHandshakeTimeout). A client that has
	// not finished by then is disconnected.
	HandshakeTimeout time.Duration
	// Logger receives connection events (default slog.Default()).
	Logger *slog.Logger
}

// DefaultHandshakeTimeout is Options.HandshakeTimeout's default.
const DefaultHandshakeTimeout = 10 * time.Second

// TLS is the TLS policy of a listener (ServeTLS): the NBD protocol's
// NBD_OPT_STARTTLS upgrades a connection during option haggling.
type TLS struct {
	// Config holds the server's certificate; to authenticate clients,
	// ClientCAs and ClientAuth = tls.RequireAndVerifyClientCert. TLS 1.2
	// is the least version accepted (the protocol's floor).
	Config *tls.Config
	// Require refuses every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT
	// with NBD_REP_ERR_TLS_REQD until TLS is on, and drops a client that
	// sends NBD_OPT_EXPORT_NAME before (the protocol's FORCEDTLS mode).
	// Otherwise TLS is the client's choice (SELECTIVETLS, with no export
	// that needs it).
	Require bool
}

// Server serves the exports of a Backend over NBD. One Server may serve
// several listeners at once (a Unix socket and a TCP address).
type Server struct {
	backend Backend
	opts    Options
	log     *slog.Logger
	clients atomic.Int64
}

// NewServer returns a Server for b.
func NewServer(b Backend, o Options) *Server {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.MaxPayload == 0 || o.MaxPayload > DefaultMaxPayload {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Server{backend: b, opts: o, log: o.Logger}
}

// Clients is the number of connections open now, in handshake or in
// transmission, over every listener.
func (s *Server) Clients() int { return int(s.clients.Load()) }

// Serve accepts connections on l and serves each in its own goroutines
// until ctx ends. Then it shuts down gracefully: it closes l, stops
// reading requests, lets the requests in flight finish and send their
// replies, closes every connection and returns nil. It returns an error
// if Accept fails for another reason (after the same shutdown). Serve
// closes l in every case.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return s.ServeTLS(ctx, l, nil)
}

// ServeTLS is Serve with a TLS policy for the connections of l; nil
// serves without TLS (NBD_OPT_STARTTLS is then unsupported).
func (s *Server) ServeTLS(ctx context.Context, l net.Listener, t *TLS) error {
	if t != nil {
		if t.Config == nil {
			l.Close()
			return fmt.Errorf("nbd: TLS on %s without a configuration: %w", l.Addr(), errs.ErrInvalid)
		}
		c := t.Config.Clone()
		c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
		t = &TLS{Config: c, Require: t.Require}
	}
	var (
		mu    sync.Mutex
		conns = map[*conn]struct{}{}
		wg    sync.WaitGroup
		done  bool
	)
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		mu.Lock()
		done = true
		for c := range conns {
			c.shutdown()
		}
		mu.Unlock()
	})
	defer stop()

	var err error
	for {
		nc, aerr := l.Accept()
		if aerr != nil {
			var ne net.Error
			if errors.As(aerr, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if ctx.Err() == nil {
				err = fmt.Errorf("nbd: accept on %s: %w", l.Addr(), aerr)
				l.Close()
			}
			break
		}
		c := s.newConn(nc, t)
		mu.Lock()
		if done {
			mu.Unlock()
			nc.Close()
			continue
		}
		conns[c] = struct{}{}
		s.clients.Add(1)
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			c.serve(ctx)
			mu.Lock()
			delete(conns, c)
			s.clients.Add(-1)
			mu.Unlock()
		}()
	}
	if err != nil {
		mu.Lock()
		done = true
		for c := range conns {
			c.shutdown()
		}
		mu.Unlock()
	}
	wg.Wait()
	return err
}
