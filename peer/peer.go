package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// Options are the settings every peer shares (the seed's common options).
type Options struct {
	Role      string // role name, shown by tools
	Segment   string // segment name
	PortStart int    // first port bound (portno_start)
	PortEnd   int    // last port bound (portno_end)
	NrOps     int    // requests in flight at most (nr_ops)
	NrThreads int    // workers serving them (nr_threads)
	PidFile   string // held (locked) while running, removed at exit ("" = none); see TakePidfile
	// DrainTimeout bounds how long a stopping peer waits for requests in
	// flight before it cancels their context (default 10s).
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Doorbell makes the ports sleep on a doorbell in the Go poller
	// (xseg.Port.UseDoorbell) instead of the futex (the default): for a
	// peer that also serves sockets (nbdd). Wait.Sleep overrides it.
	Doorbell bool
	// Wait tunes how the ports' loops wait for work (zero: the
	// defaults, DefaultSpin then sleep as Doorbell says).
	Wait Wait
	// InPlaceWhenIdle: a request handed over by local dispatch while
	// the peer has nothing else in flight, from a goroutine that may
	// block (no port loop of the process is serving), is served by
	// Serve in the submitter's goroutine instead of a worker's (one
	// goroutine switch less at queue depth 1): for a handler whose
	// Serve does short blocking work (filed's pread/pwrite). See
	// local.go.
	InPlaceWhenIdle bool
}

// Result says what became of a request when its handler returned.
type Result uint8

const (
	// Served: the handler is done with the request, and the peer
	// answers it with the error returned (nil: success).
	Served Result = iota
	// Forwarded: the handler passed the request on with Peer.Forward;
	// whoever serves it there answers it.
	Forwarded
	// Deferred: the handler will answer the request later, from another
	// goroutine, with Peer.Answer: a request that waits (for a lock, say)
	// then holds no worker. It still counts against nr_ops until
	// answered, and Stop waits for it (its ctx ends after DrainTimeout).
	Deferred
)

// String returns the result's name.
func (res Result) String() string {
	switch res {
	case Served:
		return "served"
	case Forwarded:
		return "forwarded"
	case Deferred:
		return "deferred"
	}
	return fmt.Sprintf("Result(%d)", uint8(res))
}

// Handler serves one request. It returns Served and the error to answer
// with, or Forwarded or Deferred (with a nil error) when it handed the
// request on. ctx ends when the peer gives up on draining at shutdown.
type Handler interface {
	Serve(ctx context.Context, p *Peer, r *xseg.Request) (Result, error)
}

// HandlerFunc adapts a function that serves every request itself (it
// never forwards nor defers) to Handler: the peer answers with the
// function's error.
type HandlerFunc func(ctx context.Context, p *Peer, r *xseg.Request) error

// Serve returns Served and f's error.
func (f HandlerFunc) Serve(ctx context.Context, p *Peer, r *xseg.Request) (Result, error) {
	return Served, f(ctx, p, r)
}

// InlineHandler is a Handler whose requests never block (no I/O, no
// calls to other peers): the peer serves them in its port loop, with no
// hand-off to a worker.
type InlineHandler interface {
	Handler
	ServeInline(r *xseg.Request) error
}

// AsyncHandler is a Handler with a fast path run in the port's loop, with
// no hand-off to a worker: ServeAsync either takes the request — it then
// answers it later with Peer.Answer, typically from a SubmitFunc callback
// — or returns false and the request goes to a worker as usual.
// ServeAsync and the callbacks must never block.
type AsyncHandler interface {
	Handler
	ServeAsync(p *Peer, r *xseg.Request) bool
}

// Peer is a running peer: its ports, workers and the requests in flight.
type Peer struct {
	opts    Options
	seg     *xseg.Segment
	h       Handler
	log     *slog.Logger
	loops   []*portLoop
	work    chan job
	ops     atomic.Int32 // accepted, not yet answered
	drain   atomic.Bool  // stopping: take no new requests
	ctx     context.Context
	cancel  context.CancelFunc
	workers sync.WaitGroup
	pidf    *Pidfile
	fails   failLog
}

type job struct {
	loop *portLoop
	r    *xseg.Request
}

func (o *Options) check() error {
	if o.PortStart < 0 || o.PortEnd < o.PortStart {
		return fmt.Errorf("%s: port range %d..%d: %w", o.Role, o.PortStart, o.PortEnd, errs.ErrInvalid)
	}
	if o.NrOps < 1 || o.NrThreads < 1 {
		return fmt.Errorf("%s: nr_ops %d and nr_threads %d must be at least 1: %w", o.Role, o.NrOps, o.NrThreads, errs.ErrInvalid)
	}
	return nil
}

// Start joins the segment, binds the port range and starts serving. It
// fails with a clear error when the segment is missing or a port is bound
// by a live peer.
func Start(opts Options, h Handler) (*Peer, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	seg, err := xseg.Join(opts.Segment)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w (is archipelago started?)", opts.Role, err)
		}
		return nil, fmt.Errorf("%s: %w", opts.Role, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{opts: opts, seg: seg, h: h, log: opts.Logger, work: make(chan job, opts.NrOps), ctx: ctx, cancel: cancel}
	// The pidfile first: a second process for the role stops here,
	// before it touches a port (whatever segment it joined).
	if opts.PidFile != "" {
		if p.pidf, err = TakePidfile(opts.PidFile); err != nil {
			seg.Close()
			cancel()
			return nil, fmt.Errorf("%s: %w", opts.Role, err)
		}
	}
	var ports []*xseg.Port
	for no := opts.PortStart; no <= opts.PortEnd; no++ {
		port, err := seg.Bind(no)
		if err != nil {
			for _, q := range ports {
				q.Release()
			}
			p.pidf.Remove()
			seg.Close()
			cancel()
			return nil, fmt.Errorf("%s: %w", opts.Role, err)
		}
		port.SetName(opts.Role)
		ports = append(ports, port)
		if opts.Wait.doorbell(opts.Doorbell) {
			if err := port.UseDoorbell(); err != nil {
				opts.Logger.Warn("sleeping on the futex", "port", no, "err", err)
			}
		}
	}
	if p.pidf != nil {
		if err := p.pidf.WritePid(); err != nil {
			for _, q := range ports {
				q.Release()
			}
			p.pidf.Remove()
			seg.Close()
			cancel()
			return nil, fmt.Errorf("%s: %w", opts.Role, err)
		}
	}
	for i := 0; i < opts.NrThreads; i++ {
		p.workers.Add(1)
		go p.worker()
	}
	for _, port := range ports {
		var loop *portLoop
		loop = newPortLoop(port, opts.Wait, func(rs []*xseg.Request) { p.accept(loop, rs) }, p.capacity)
		loop.peer, loop.reserve, loop.unreserve = p, p.reserve, p.doneN
		p.loops = append(p.loops, loop)
	}
	for _, loop := range p.loops {
		loop.start()
		register(loop)
	}
	go p.watchSegment()
	p.log.Info("peer started", "role", opts.Role, "segment", opts.Segment, "ports", fmt.Sprintf("%d..%d", opts.PortStart, opts.PortEnd), "nr_ops", opts.NrOps, "nr_threads", opts.NrThreads, "pid", os.Getpid())
	return p, nil
}

// accept serves requests the port loop took inline, or hands them to the
// workers. They are counted already (the loop reserved them); Stop, which
// sets drain before it waits for the count to reach zero, never misses a
// request nor closes work under it.
func (p *Peer) accept(loop *portLoop, rs []*xseg.Request) {
	if ih, ok := p.h.(InlineHandler); ok && !p.drain.Load() {
		ev := make([]error, len(rs))
		for i, r := range rs {
			ev[i] = ih.ServeInline(r)
		}
		loop.port.RespondAll(rs, ev)
		p.doneN(len(ev))
		return
	}
	ah, async := p.h.(AsyncHandler)
	for _, r := range rs {
		if async && !p.drain.Load() && ah.ServeAsync(p, r) {
			continue
		}
		if p.drain.Load() {
			loop.port.Respond(r, fmt.Errorf("%s is stopping: %w", p.opts.Role, errs.ErrShutdown))
			p.done()
			continue
		}
		p.work <- job{loop, r}
	}
}

// reserve counts up to n more requests in flight, as many as nr_ops
// allows now (while stopping, n: they are taken to be refused), and
// returns how many.
func (p *Peer) reserve(n int) int {
	for {
		cur := p.ops.Load()
		if p.drain.Load() {
			p.ops.Add(int32(n))
			return n
		}
		k := min(n, p.opts.NrOps-int(cur))
		if k <= 0 {
			return 0
		}
		if p.ops.CompareAndSwap(cur, cur+int32(k)) {
			return k
		}
	}
}

// capacity is how many more requests the loops may take now: while
// stopping, any number, each to be refused at once (accept) rather than
// left queued until the requests in flight end.
func (p *Peer) capacity() int {
	if p.drain.Load() {
		return p.opts.NrOps
	}
	return p.opts.NrOps - int(p.ops.Load())
}

func (p *Peer) worker() {
	defer p.workers.Done()
	for j := range p.work {
		p.serveJob(j)
	}
}

// serveJob serves one request with the handler's Serve and answers it as
// its Result says.
func (p *Peer) serveJob(j job) {
	r := j.r
	if p.log.Enabled(p.ctx, slog.LevelDebug) {
		p.log.Debug("serve", "req", r.String())
	}
	res, err := p.h.Serve(p.ctx, p, r)
	switch res {
	case Served:
		p.Answer(r, err)
		return
	case Forwarded:
		p.done()
	case Deferred:
	default:
		// A handler's bug: the request would never be answered.
		p.log.Error("handler returned an unknown result: answering the request", "req", r.String(), "result", res.String())
		p.Answer(r, fmt.Errorf("%s: %s of %q: handler returned %v: %w", p.opts.Role, r.Op(), r.Target(), res, errs.ErrIO))
		return
	}
	if err != nil {
		// The request is no longer the handler's to answer.
		p.log.Error("handler returned an error with a request it handed on; the error is dropped", "req", r.String(), "result", res.String(), "err", err)
	}
}

// Answer answers a request whose handler returned Deferred, or one that
// an AsyncHandler took (the worker answers the others).
func (p *Peer) Answer(r *xseg.Request, err error) {
	if err != nil {
		if p.log.Enabled(p.ctx, slog.LevelDebug) {
			p.log.Debug("failed", "req", r.String(), "err", err)
		}
		p.logFailed(r, err)
		ReplyErrorText(r, err)
	}
	p.respond(r, err)
	p.done()
}

// done counts a request as answered.
func (p *Peer) done() { p.doneN(1) }

// doneN counts n requests as answered (or reserved and not taken).
func (p *Peer) doneN(n int) {
	if n <= 0 {
		return
	}
	if now := p.ops.Add(-int32(n)); now < int32(p.opts.NrOps) && now+int32(n) >= int32(p.opts.NrOps) {
		for _, loop := range p.loops { // they may have stopped taking requests
			loop.port.Wake()
		}
	}
}

// Segment is the peer's segment.
func (p *Peer) Segment() *xseg.Segment { return p.seg }

// Logger is the peer's logger.
func (p *Peer) Logger() *slog.Logger { return p.log }

// Port is the peer's first port, the source of the requests it makes.
func (p *Peer) Port() int { return p.loops[0].port.No() }

// InFlight is the number of requests accepted and not yet answered.
func (p *Peer) InFlight() int { return int(p.ops.Load()) }

// Alloc takes a request for the peer to submit to another peer.
func (p *Peer) Alloc(n int) (*xseg.Request, error) { return p.loops[0].port.Alloc(n) }

// Put releases a request the peer holds.
func (p *Peer) Put(r *xseg.Request) { p.loops[0].port.Put(r) }

// Call submits r to dst from the peer's first port and waits for the reply.
func (p *Peer) Call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error) {
	return p.loops[0].call(ctx, r, dst)
}

// Submit submits r to dst from the peer's first port and returns the
// channel on which its reply (the same slot) will come; the caller must
// receive it and Put it. On error the request has been released. Use it to
// have many requests in flight from one goroutine.
func (p *Peer) Submit(r *xseg.Request, dst int) (<-chan *xseg.Request, error) {
	return p.loops[0].submit(r, dst)
}

// SubmitFunc submits r to dst from the peer's first port; fn gets the
// reply (the same slot, to Put) in that port's loop, so it must not block.
// On error the request has been released and fn is not called.
func (p *Peer) SubmitFunc(r *xseg.Request, dst int, fn func(rep *xseg.Request)) error {
	return p.loops[0].submitTo(r, dst, &waiter{fn: fn})
}

// Forward passes an accepted request on to port dst; the handler then
// returns Forwarded (if Forward fails, the request is still the
// handler's to answer).
func (p *Peer) Forward(r *xseg.Request, dst int) error {
	return p.loops[0].port.Forward(r, dst)
}

// Stop stops the peer gracefully: it takes no new requests, lets the ones
// in flight finish (cancelling their context after DrainTimeout), answers
// what is still queued with errs.ErrShutdown, unbinds its ports and
// removes its pidfile.
func (p *Peer) Stop() {
	p.log.Info("stopping", "role", p.opts.Role, "in_flight", p.InFlight())
	timer := time.AfterFunc(p.opts.DrainTimeout, p.cancel)
	for _, loop := range p.loops {
		unregister(loop)
	}
	p.drain.Store(true)
	for p.ops.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	timer.Stop()
	p.cancel()
	close(p.work)
	p.workers.Wait()
	shut := fmt.Errorf("%s is stopping: %w", p.opts.Role, errs.ErrShutdown)
	buf := make([]*xseg.Request, 64)
	for _, loop := range p.loops {
		loop.stop()
		for rs := loop.port.Accept(buf); len(rs) > 0; rs = loop.port.Accept(buf) {
			for _, r := range rs {
				loop.port.Respond(r, shut)
			}
		}
		loop.port.Release()
	}
	p.pidf.Remove()
	p.seg.Close()
	p.log.Info("stopped", "role", p.opts.Role)
}

// Null answers every request at once with success, all bytes serviced.
var Null InlineHandler = null{}

type null struct{}

func (null) Serve(_ context.Context, _ *Peer, r *xseg.Request) (Result, error) {
	return Served, null{}.ServeInline(r)
}

func (null) ServeInline(r *xseg.Request) error {
	r.SetServiced(r.Size())
	return nil
}

// segmentWatch is how often a peer checks that its segment's file is
// still there, and segmentNag how often it says so again while it is not.
const (
	segmentWatch = 2 * time.Second
	segmentNag   = 10 * time.Minute
)

// watchSegment logs, at level error, when the segment's file is removed
// (a cleanup script, systemd-logind's RemoveIPC) or replaced while the
// peer runs: the peer goes on serving the processes that share its
// mapping, but no process started from now on reaches it.
func (p *Peer) watchSegment() {
	t := time.NewTicker(segmentWatch)
	defer t.Stop()
	var said string
	var saidAt time.Time
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		u := p.seg.Unlinked()
		if u != "" && (u != said || time.Since(saidAt) >= segmentNag) {
			p.log.Error("segment file gone while this peer runs: it keeps serving the processes already on it, but no new one can reach it; run 'archipelago stop' (which finds it by its pidfile), then 'archipelago start'",
				"segment", p.opts.Segment, "what", u, "role", p.opts.Role, "pid", os.Getpid())
			saidAt = time.Now()
		}
		if u == "" && said != "" {
			p.log.Info("segment file back in place", "segment", p.opts.Segment)
		}
		said = u
	}
}
