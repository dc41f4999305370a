package peer_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestHandlerResults checks what the peer does with each Result: Served
// answers with the handler's error, Forwarded leaves the answer to the
// peer it was forwarded to, Deferred to the handler's Peer.Answer; and
// every request leaves nr_ops once answered (InFlight back to 0).
func TestHandlerResults(t *testing.T) {
	s := newSegment(t, 16)
	start := func(port int, h peer.Handler) *peer.Peer {
		t.Helper()
		p, err := peer.Start(peer.Options{Role: "results", Segment: s.Name(), PortStart: port, PortEnd: port,
			NrOps: 8, NrThreads: 2, Logger: slog.New(slog.DiscardHandler)}, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() && p.InFlight() > 0 {
				return // Stop would wait for them for ever
			}
			p.Stop()
		})
		return p
	}
	// The peer on port 2 answers what port 1 forwards, marking it.
	start(2, peer.HandlerFunc(func(_ context.Context, _ *peer.Peer, r *xseg.Request) error {
		r.SetServiced(2)
		return nil
	}))
	release := make(chan struct{})
	p1 := start(1, handlerFunc(func(_ context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
		switch r.Target() {
		case "forward":
			if err := p.Forward(r, 2); err != nil {
				return peer.Served, err
			}
			return peer.Forwarded, nil
		case "defer":
			go func() {
				<-release
				r.SetServiced(1)
				p.Answer(r, nil)
			}()
			return peer.Deferred, nil
		}
		return peer.Served, errs.ErrNotFound
	}))
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(target string) <-chan *xseg.Request {
		t.Helper()
		r, err := c.Alloc(0)
		if err != nil {
			t.Fatal(err)
		}
		r.SetOp(xseg.OpPing)
		r.SetTarget(target)
		ch := make(chan *xseg.Request, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rep, err := c.Call(ctx, r, 1)
			if err != nil {
				t.Errorf("%s: %v", target, err)
			}
			ch <- rep
		}()
		return ch
	}
	check := func(target string, rep *xseg.Request, serviced uint64, want error) {
		t.Helper()
		if rep == nil {
			t.Fatalf("%s: no reply", target)
		}
		defer c.Put(rep)
		if err := rep.Err(); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("%s: reply error %v, want %v", target, err, want)
		}
		if rep.Serviced() != serviced {
			t.Errorf("%s: serviced %d, want %d (who answered?)", target, rep.Serviced(), serviced)
		}
	}
	check("served", <-send("served"), 0, errs.ErrNotFound)
	check("forward", <-send("forward"), 2, nil)
	deferred := send("defer")
	testutil.WaitFor(t, 10*time.Second, "the deferred request to be the only one in flight", func() bool { return p1.InFlight() == 1 })
	select {
	case rep := <-deferred:
		c.Put(rep)
		t.Fatal("a deferred request was answered before its handler answered it")
	default:
	}
	close(release)
	check("defer", <-deferred, 1, nil)
	testutil.WaitFor(t, 10*time.Second, "no request in flight", func() bool { return p1.InFlight() == 0 })
}

// handlerFunc is a Handler that may forward or defer.
type handlerFunc func(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error)

func (f handlerFunc) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	return f(ctx, p, r)
}
