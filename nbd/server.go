package nbd

import (
	"context"
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
	// HandshakeTimeout bounds the option haggling of a connection
	// (default 30s).
	HandshakeTimeout time.Duration
	// Logger receives connection events (default slog.Default()).
	Logger *slog.Logger
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
		o.HandshakeTimeout = 30 * time.Second
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
		c := s.newConn(nc)
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

// errShutdown ends a connection's reader when the server stops.
var errShutdown = fmt.Errorf("nbd: server stopping: %w", errs.ErrShutdown)
