package peer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// newSegment creates a segment named after the test (see testbin.Segment).
func newSegment(t testing.TB, sizeMiB int) *xseg.Segment {
	t.Helper()
	return testbin.Segment(t, "peertest", sizeMiB)
}

// waitBound waits until a live process binds port no.
func waitBound(t testing.TB, s *xseg.Segment, no int) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("port %d to be bound", no), func() bool {
		_, alive := s.Owner(no)
		return alive
	})
}

func call(t testing.TB, c *peer.Client, op xseg.Op, dst, size int) error {
	t.Helper()
	r, err := c.Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	r.SetOp(op)
	r.SetSize(uint64(size))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := c.Call(ctx, r, dst)
	if err != nil {
		return err
	}
	defer c.Put(rep)
	return rep.Err()
}

func TestNulldServesAndStopsGracefully(t *testing.T) {
	s := newSegment(t, 16)
	pidfile := filepath.Join(t.TempDir(), "nulld.pid")
	p := testbin.Start(t, "nulld", "--segment", s.Name(), "--portno-start", "2", "--portno-end", "3", "--pidfile", pidfile, "--log-level", "3")
	waitBound(t, s, 2)
	waitBound(t, s, 3)
	testutil.WaitFor(t, 10*time.Second, "the pidfile to name nulld", func() bool {
		return peer.ReadPidfile(pidfile).PID == p.Cmd.Process.Pid
	})
	if pi := peer.ReadPidfile(pidfile); !pi.Held || !pi.Alive || !pi.Running() {
		b, _ := os.ReadFile(pidfile)
		t.Fatalf("pidfile %q: %+v; pid %d", b, pi, p.Cmd.Process.Pid)
	}
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, dst := range []int{2, 3} {
		if err := call(t, c, xseg.OpPing, dst, 0); err != nil {
			t.Fatal(err)
		}
		if err := call(t, c, xseg.OpRead, dst, 8192); err != nil {
			t.Fatal(err)
		}
	}
	if ps, _ := s.PortStat(2); ps.Name != "nulld" || ps.Served != 2 {
		t.Errorf("port stat %+v", ps)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.Output())
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind: %v", err)
	}
	if pid, _ := s.Owner(2); pid != 0 {
		t.Errorf("port 2 still bound to %d after stop", pid)
	}
	if err := call(t, c, xseg.OpPing, 2, 0); !errors.Is(err, errs.ErrNoPeer) {
		t.Errorf("call after stop: %v, want ErrNoPeer", err)
	}
}

func TestStopFinishesInFlightAndRefusesTheRest(t *testing.T) {
	s := newSegment(t, 16)
	p := testbin.Start(t, "nulld", "--segment", s.Name(), "--portno-start", "1", "--nr-ops", "1", "--nr-threads", "1", "--delay", "300ms")
	waitBound(t, s, 1)
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() { errc <- call(t, c, xseg.OpPing, 1, 0) }()
	}
	testutil.WaitFor(t, 5*time.Second, "a request in flight", func() bool {
		ps, _ := s.PortStat(1)
		return ps.InFlight == 1 && ps.Queued == 3
	})
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var ok, shut int
	for i := 0; i < 4; i++ {
		switch err := <-errc; {
		case err == nil:
			ok++
		case errors.Is(err, errs.ErrShutdown):
			shut++
		default:
			t.Errorf("unexpected answer: %v", err)
		}
	}
	if ok != 1 || shut != 3 {
		t.Errorf("%d served and %d refused, want 1 and 3", ok, shut)
	}
}

func TestStartErrors(t *testing.T) {
	p := testbin.Start(t, "nulld", "--segment", "peertest-no-such-segment", "--portno-start", "1")
	if err := p.Wait(10 * time.Second); err == nil {
		t.Fatal("nulld started without a segment")
	}
	if out := p.Output(); !strings.Contains(out, "peertest-no-such-segment") || !strings.Contains(out, "not found") {
		t.Errorf("message %q does not name the missing segment", out)
	}

	s := newSegment(t, 16)
	first := testbin.Start(t, "nulld", "--segment", s.Name(), "--portno-start", "1")
	waitBound(t, s, 1)
	second := testbin.Start(t, "nulld", "--segment", s.Name(), "--portno-start", "1")
	if err := second.Wait(10 * time.Second); err == nil {
		t.Fatal("second nulld bound a port held by a live peer")
	}
	want := fmt.Sprintf("bound by live pid %d", first.Cmd.Process.Pid)
	if out := second.Output(); !strings.Contains(out, want) {
		t.Errorf("message %q lacks %q", out, want)
	}
	first.Kill()
	// A port left by a killed peer can be bound again.
	third := testbin.Start(t, "nulld", "--segment", s.Name(), "--portno-start", "1")
	waitBound(t, s, 1)
	if pid, _ := s.Owner(1); pid != third.Cmd.Process.Pid {
		t.Fatalf("port 1 owned by %d, want %d", pid, third.Cmd.Process.Pid)
	}
}

func TestRequestsAtAKilledPeerFailBack(t *testing.T) {
	s := newSegment(t, 16)
	p := testbin.Start(t, "nulld", "--segment", s.Name(), "--portno-start", "1", "--nr-ops", "2", "--delay", "10s")
	waitBound(t, s, 1)
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 5)
	for i := 0; i < 5; i++ {
		go func() { errc <- call(t, c, xseg.OpRead, 1, 4096) }()
	}
	testutil.WaitFor(t, 5*time.Second, "requests in flight and queued", func() bool {
		ps, _ := s.PortStat(1)
		return ps.InFlight == 2 && ps.Queued == 3
	})
	p.Kill()
	start := time.Now()
	for i := 0; i < 5; i++ {
		if err := <-errc; !errors.Is(err, errs.ErrPeerDied) {
			t.Errorf("answer %d: %v, want ErrPeerDied", i, err)
		}
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("fail-back took %v", d)
	}
	if in := s.Info(); in.HeapUsed != 0 {
		t.Errorf("heap still holds %d bytes", in.HeapUsed)
	}
}
