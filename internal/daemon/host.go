package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Hosted says how a role runs inside a host process (archipelagod) that
// runs several roles as goroutines: what is the process's is the host's
// (GOMAXPROCS, signals, the CPU profile, the exit status), and each role
// tells the host when it serves.
type Hosted struct {
	// Role names the role in every line its logger writes (role=NAME).
	Role string
	// Ready is called once, when the role serves: its ports bound, its
	// pidfile written, its sockets and metrics endpoint listening.
	Ready func()
}

type hostedKey struct{}

// WithHosted returns a context under which a role's program runs hosted
// (see Hosted); the role runs until the context ends.
func WithHosted(ctx context.Context, h Hosted) context.Context {
	if h.Ready != nil {
		h.Ready = sync.OnceFunc(h.Ready)
	}
	return context.WithValue(ctx, hostedKey{}, &h)
}

// HostedOf returns how the role of ctx is hosted, nil for a role that is
// its own program.
func HostedOf(ctx context.Context) *Hosted {
	h, _ := ctx.Value(hostedKey{}).(*Hosted)
	return h
}

// Ready tells the host of ctx, if any, that its role serves.
func Ready(ctx context.Context) {
	if h := HostedOf(ctx); h != nil && h.Ready != nil {
		h.Ready()
	}
}

// Logger returns the role's logger at the flags' level, on stderr; a
// hosted role's names it in every line (role=NAME, once: the lines that
// name it themselves, as the peer's do, keep theirs).
func (c *CommonFlags) Logger(ctx context.Context) *slog.Logger {
	l := NewLogger(c.LogLevel, os.Stderr)
	if h := HostedOf(ctx); h != nil && h.Role != "" {
		l = slog.New(roleHandler{Handler: l.Handler().WithAttrs([]slog.Attr{slog.String("role", h.Role)}), role: h.Role})
	}
	return l
}

// roleHandler is a handler whose lines name role already: it leaves out
// a record's own role=<role>.
type roleHandler struct {
	slog.Handler
	role string
}

func (h roleHandler) Handle(ctx context.Context, r slog.Record) error {
	dup := false
	r.Attrs(func(a slog.Attr) bool {
		dup = a.Key == "role" && a.Value.String() == h.role
		return !dup
	})
	if !dup {
		return h.Handler.Handle(ctx, r)
	}
	n := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "role" || a.Value.String() != h.role {
			n.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, n)
}

func (h roleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return roleHandler{Handler: h.Handler.WithAttrs(as), role: h.role}
}

func (h roleHandler) WithGroup(name string) slog.Handler {
	return roleHandler{Handler: h.Handler.WithGroup(name), role: h.role}
}

// SignalContext returns a context that ends at SIGTERM or SIGINT (logged
// on log) or when ctx ends; stop releases the signals.
func SignalContext(ctx context.Context, log *slog.Logger) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case s := <-sig:
			log.Info("signal", "signal", s.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sig)
		cancel()
		<-done
	}
}
