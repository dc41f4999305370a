package xseg

import (
	"os"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testutil"
)

// waitOnce runs p.Wait(d) in a goroutine and returns a channel closed when
// it returns.
func waitOnce(p *Port, d time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() { p.Wait(d); close(done) }()
	return done
}

// awaitWaiter waits until p's owner counts as sleeping on it.
func awaitWaiter(t *testing.T, p *Port) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the owner to start waiting", func() bool { return p.p.waiters.Load() != 0 })
}

// TestDoorbellWakes checks that a bound port sleeps on its doorbell and a
// submit rings it: the sleeper waits for a minute otherwise, and the futex
// is not what wakes it (nobody sleeps on it).
func TestDoorbellWakes(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	srv, _ := s.Bind(0)
	cli, _ := s.Bind(1)
	if srv.bell != nil || srv.p.bell.Load() != 0 {
		t.Fatal("a port has a doorbell before UseDoorbell")
	}
	if ps, _ := s.PortStat(0); ps.Doorbell {
		t.Fatal("PortStat says doorbell before UseDoorbell")
	}
	if err := srv.UseDoorbell(); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.PortStat(0); !ps.Doorbell {
		t.Fatal("PortStat does not say doorbell after UseDoorbell")
	}
	if srv.bell == nil || srv.p.bell.Load() != srv.p.bindGen.Load() {
		t.Fatalf("bound port has no doorbell: file %v, bell word %d, generation %d", srv.bell, srv.p.bell.Load(), srv.p.bindGen.Load())
	}
	if fi, err := os.Stat(bellPath(s.Name(), 0)); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("doorbell FIFO: %v, %v", fi, err)
	}
	done := waitOnce(srv, time.Minute)
	awaitWaiter(t, srv)
	r, _ := cli.Alloc(0)
	if err := cli.Submit(r, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a submit did not wake the port's owner")
	}
	if s.bells.rung.Load() == 0 {
		t.Fatal("woken, but not by the doorbell")
	}
	got := srv.Accept(make([]*Request, 1))
	if len(got) != 1 {
		t.Fatalf("accepted %d requests, want 1", len(got))
	}
	srv.Respond(got[0], nil)
	for len(cli.Receive(make([]*Request, 1))) == 0 {
		cli.Wait(time.Second)
	}
	cli.Put(r)
}

// TestDoorbellRebind checks that a waker that rang a port's doorbell rings
// the new one after the port is released and bound again (a restarted
// peer), and that Release and Destroy remove the FIFOs.
func TestDoorbellRebind(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	cli, _ := s.Bind(1)
	cli.UseDoorbell()
	for round := range 2 {
		srv, err := s.Bind(0)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.UseDoorbell(); err != nil {
			t.Fatal(err)
		}
		before := s.bells.rung.Load()
		done := waitOnce(srv, time.Minute)
		awaitWaiter(t, srv)
		srv.Wake()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Wake did not wake the owner", round)
		}
		if s.bells.rung.Load() == before {
			t.Fatalf("round %d: woken, but not by the doorbell", round)
		}
		srv.Release()
		if _, err := os.Stat(bellPath(s.Name(), 0)); !os.IsNotExist(err) {
			t.Fatalf("round %d: doorbell left after Release: %v", round, err)
		}
		if s.port(0).bell.Load() != 0 {
			t.Fatalf("round %d: bell word left after Release", round)
		}
	}
	if _, err := os.Stat(bellPath(s.Name(), 1)); err != nil {
		t.Fatalf("the client port's doorbell: %v", err)
	}
	cli.Release()
	name := s.Name()
	Destroy(name) // the mapping stays for the test's cleanup
	if _, err := os.Stat(bellPath(name, 1)); !os.IsNotExist(err) {
		t.Fatalf("doorbell left after Destroy: %v", err)
	}
}

// TestFutexFallback checks that a port whose owner gave its doorbell up
// is woken on the futex.
func TestFutexFallback(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	srv, _ := s.Bind(0)
	srv.UseDoorbell()
	srv.closeBell()
	done := waitOnce(srv, time.Minute)
	awaitWaiter(t, srv)
	srv.Wake()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Wake did not wake an owner sleeping on the futex")
	}
}
