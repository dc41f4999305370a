package peer_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// servedIn records, for each request an inline handler serves, whether
// the goroutine serving it is the one that submitted it (its stack holds
// the test's submitting function): served in place, without the rings.
type servedIn struct {
	inPlace, elsewhere atomic.Int32
}

func (h *servedIn) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	return peer.Served, h.ServeInline(r)
}

func (h *servedIn) ServeInline(r *xseg.Request) error {
	buf := make([]byte, 16<<10)
	if strings.Contains(string(buf[:runtime.Stack(buf, false)]), "submitFromTest") {
		h.inPlace.Add(1)
	} else {
		h.elsewhere.Add(1)
	}
	r.SetServiced(r.Size())
	return nil
}

//go:noinline
func submitFromTest(t *testing.T, c *peer.Client, dst int) error {
	t.Helper()
	return call(t, c, xseg.OpRead, dst, 4096)
}

func startPeer(t *testing.T, s *xseg.Segment, no, nrOps int, h peer.Handler) *peer.Peer {
	t.Helper()
	p, err := peer.Start(peer.Options{Role: fmt.Sprintf("p%d", no), Segment: s.Name(), PortStart: no, PortEnd: no, NrOps: nrOps, NrThreads: 2}, h)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A request from a client of the process to a peer of the process is
// served in the submitter's goroutine, and the segment's counters say what
// they would say through the rings; with local dispatch off it goes
// through the port's loop. The peer and the client map the segment each
// through their own Join, as two roles of archipelagod do.
func TestLocalDispatchServesInPlace(t *testing.T) {
	s := newSegment(t, 16)
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("local=%v", on), func(t *testing.T) {
			defer peer.SetLocalDispatch(on)()
			h := &servedIn{}
			p := startPeer(t, s, 2, 8, h)
			defer p.Stop()
			c, err := peer.Dial(s.Name()) // a mapping of its own
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before, _ := s.PortStat(2)
			cb, _ := s.PortStat(c.Port())
			for range 20 {
				if err := submitFromTest(t, c, 2); err != nil {
					t.Fatal(err)
				}
			}
			want := int32(20)
			if !on {
				want = 0
			}
			if h.inPlace.Load() != want || h.inPlace.Load()+h.elsewhere.Load() != 20 {
				t.Fatalf("served in the submitter's goroutine %d times, elsewhere %d; want %d in place", h.inPlace.Load(), h.elsewhere.Load(), want)
			}
			after, _ := s.PortStat(2)
			ca, _ := s.PortStat(c.Port())
			if after.Submitted-before.Submitted != 20 || after.Served-before.Served != 20 || after.InFlight != 0 || after.Queued != 0 {
				t.Errorf("port 2 counters: before %+v after %+v", before, after)
			}
			if ca.Received-cb.Received != 20 || ca.Replies != 0 {
				t.Errorf("client port counters: before %+v after %+v", cb, ca)
			}
			if in := s.Info(); in.FreeRequests != in.Requests {
				t.Errorf("%d requests still in use", in.Requests-in.FreeRequests)
			}
		})
	}
}

// blockUntil holds every request it serves until release is closed.
type blockUntil struct {
	release chan struct{}
	started chan struct{}
	served  atomic.Int32
}

func (h *blockUntil) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	h.started <- struct{}{}
	<-h.release
	h.served.Add(1)
	r.SetServiced(r.Size())
	return peer.Served, nil
}

// A peer with nr_ops requests in flight takes no more in place: the next
// goes through its ring and is served once one ends; a stopping peer takes
// none, and requests in flight end before its ports go.
func TestLocalDispatchFullAndStopping(t *testing.T) {
	s := newSegment(t, 16)
	h := &blockUntil{release: make(chan struct{}), started: make(chan struct{}, 8)}
	p := startPeer(t, s, 2, 2, h)
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 3)
	for range 3 {
		go func() { errc <- call(t, c, xseg.OpWrite, 2, 4096) }()
	}
	<-h.started
	<-h.started
	// The third waits in the ring: nr_ops is 2.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, _ := s.PortStat(2)
		if ps.Queued == 1 && ps.InFlight == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port 2: %+v, want 1 queued and 2 in flight", ps)
		}
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() { p.Stop(); close(stopped) }()
	time.Sleep(20 * time.Millisecond)
	close(h.release)
	<-stopped
	var ok, shut int
	for range 3 {
		switch err := <-errc; {
		case err == nil:
			ok++
		case errors.Is(err, errs.ErrShutdown) || errors.Is(err, errs.ErrNoPeer):
			shut++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok < 2 || ok+shut != 3 {
		t.Errorf("%d answered, %d refused at shutdown; want the 2 in flight answered", ok, shut)
	}
	// Nothing serves port 2 now: a request fails instead of hanging.
	if err := call(t, c, xseg.OpRead, 2, 0); !errors.Is(err, errs.ErrNoPeer) {
		t.Errorf("after stop: %v, want ErrNoPeer", err)
	}
	if in := s.Info(); in.FreeRequests != in.Requests {
		t.Errorf("%d requests still in use", in.Requests-in.FreeRequests)
	}
}

// splitter is a composer in miniature: from its port's loop (ServeAsync)
// it splits each request into parts sent to the blocker port with
// SubmitFunc, and answers when the last part's callback runs.
type splitter struct{ blocker, parts int }

func (h *splitter) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	return peer.Served, fmt.Errorf("not on the fast path: %w", errs.ErrInvalid)
}

func (h *splitter) ServeAsync(p *peer.Peer, r *xseg.Request) bool {
	n := r.Size() / uint64(h.parts)
	var left atomic.Int32
	left.Store(int32(h.parts))
	var mu sync.Mutex
	var first error
	for i := range h.parts {
		sub, err := p.Alloc(0)
		if err != nil {
			panic(err)
		}
		if err := sub.Borrow(r, uint64(i)*n, n); err != nil {
			panic(err)
		}
		sub.SetOp(r.Op())
		sub.SetSize(n)
		sub.SetOffset(uint64(i))
		err = p.SubmitFunc(sub, h.blocker, func(rep *xseg.Request) {
			if err := rep.Err(); err != nil {
				mu.Lock()
				first = err
				mu.Unlock()
			}
			p.Put(rep)
			if left.Add(-1) == 0 {
				mu.Lock()
				err := first
				mu.Unlock()
				r.SetServiced(r.Size())
				p.Answer(r, err)
			}
		})
		if err != nil {
			panic(err)
		}
	}
	return true
}

// filler writes, in each part it serves, its offset (the part's index)
// into every byte: a part served twice, lost or crossed with another
// request's shows in the bytes.
type filler struct{}

func (filler) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	b := r.Data()
	for i := range b {
		b[i] = byte(r.Offset()) + 1
	}
	r.SetServiced(r.Size())
	return peer.Served, nil
}

// Many goroutines through a chain of three hops in one process (client →
// splitter → blocker workers → callbacks → client), with local dispatch
// on and off: every byte of every answer is right, and nothing is left in
// use (run with -race).
func TestLocalDispatchChainUnderLoad(t *testing.T) {
	s := newSegment(t, 64)
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("local=%v", on), func(t *testing.T) {
			defer peer.SetLocalDispatch(on)()
			b := startPeer(t, s, 3, 16, peer.HandlerFunc(func(ctx context.Context, p *peer.Peer, r *xseg.Request) error {
				_, err := filler{}.Serve(ctx, p, r)
				return err
			}))
			defer b.Stop()
			sp := startPeer(t, s, 2, 8, &splitter{blocker: 3, parts: 4})
			defer sp.Stop()
			c, err := peer.NewClient(s)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := range 200 {
						r, err := c.Alloc(16 << 10)
						if err != nil {
							t.Error(err)
							return
						}
						r.SetOp(xseg.OpRead)
						r.SetSize(16 << 10)
						rep, err := c.Call(context.Background(), r, 2)
						if err != nil {
							t.Errorf("goroutine %d call %d: %v", g, k, err)
							return
						}
						if err := rep.Err(); err != nil {
							t.Errorf("goroutine %d call %d: %v", g, k, err)
						}
						d := rep.Data()
						for i := range d {
							if want := byte(i/(4<<10)) + 1; d[i] != want {
								t.Errorf("goroutine %d call %d: byte %d is %d, want %d", g, k, i, d[i], want)
								break
							}
						}
						c.Put(rep)
					}
				}()
			}
			wg.Wait()
			if in := s.Info(); in.FreeRequests != in.Requests {
				t.Errorf("%d requests still in use", in.Requests-in.FreeRequests)
			}
		})
	}
}

// inPlaceProbe records, for each request Serve gets, whether it runs in
// the submitter's goroutine; hold, if set, holds a request in Serve.
type inPlaceProbe struct {
	inPlace, elsewhere atomic.Int32
	hold               chan struct{}
}

func (h *inPlaceProbe) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	if r.Op() == xseg.OpWrite {
		<-h.hold
	}
	buf := make([]byte, 16<<10)
	if strings.Contains(string(buf[:runtime.Stack(buf, false)]), "submitFromTest") {
		h.inPlace.Add(1)
	} else {
		h.elsewhere.Add(1)
	}
	r.SetServiced(r.Size())
	return peer.Served, nil
}

// With Options.InPlaceWhenIdle, a request handed over while the peer has
// nothing in flight is served in the submitter's goroutine; with another
// in flight, or while a port loop of the process is serving (the
// submitter might be that loop, which must not block), a worker serves it.
func TestInPlaceWhenIdle(t *testing.T) {
	s := newSegment(t, 16)
	h := &inPlaceProbe{hold: make(chan struct{})} // holds WRITEs
	p, err := peer.Start(peer.Options{Role: "filed", Segment: s.Name(), PortStart: 2, PortEnd: 2, NrOps: 8, NrThreads: 2, InPlaceWhenIdle: true}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 10 {
		if err := submitFromTest(t, c, 2); err != nil {
			t.Fatal(err)
		}
	}
	if h.inPlace.Load() != 10 || h.elsewhere.Load() != 0 {
		t.Fatalf("idle: %d in place, %d by a worker; want all 10 in place", h.inPlace.Load(), h.elsewhere.Load())
	}

	// One WRITE held in Serve (in place, in the goroutine below): the
	// peer is not idle.
	held := make(chan error, 1)
	go func() { held <- call(t, c, xseg.OpWrite, 2, 4096) }()
	deadline := time.Now().Add(10 * time.Second)
	for p.InFlight() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the WRITE never reached the peer")
		}
		time.Sleep(time.Millisecond)
	}
	if err := submitFromTest(t, c, 2); err != nil {
		t.Fatal(err)
	}
	close(h.hold)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if h.inPlace.Load() != 10 || h.elsewhere.Load() != 2 {
		t.Fatalf("busy: %d in place, %d by a worker; want the READ and the WRITE by workers", h.inPlace.Load()-10, h.elsewhere.Load())
	}

	// A port loop of the process is inside a handler: no request is
	// served in place meanwhile.
	stuck := make(chan struct{})
	inLoop := make(chan struct{})
	q := startPeer(t, s, 3, 4, inlineFunc(func(r *xseg.Request) error {
		close(inLoop)
		<-stuck
		return nil
	}))
	defer q.Stop()
	other, err := peer.Dial(s.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	defer peer.SetLocalDispatch(true)()
	restore := peer.SetLocalDispatch(false) // through the ring: served in q's loop
	ping := make(chan error, 1)
	r, err := other.Alloc(0)
	if err != nil {
		t.Fatal(err)
	}
	r.SetOp(xseg.OpPing)
	go func() {
		rep, err := other.Call(context.Background(), r, 3)
		if err == nil {
			other.Put(rep)
		}
		ping <- err
	}()
	<-inLoop
	restore()
	if err := submitFromTest(t, c, 2); err != nil {
		t.Fatal(err)
	}
	close(stuck)
	if err := <-ping; err != nil {
		t.Fatal(err)
	}
	if h.inPlace.Load() != 10 || h.elsewhere.Load() != 3 {
		t.Fatalf("a loop serving: %d in place, %d by a worker; want a worker", h.inPlace.Load()-10, h.elsewhere.Load()-2)
	}
}

// inlineFunc is an InlineHandler of a function.
type inlineFunc func(r *xseg.Request) error

func (f inlineFunc) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	return peer.Served, f(r)
}

func (f inlineFunc) ServeInline(r *xseg.Request) error { return f(r) }
