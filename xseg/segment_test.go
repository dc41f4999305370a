package xseg

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// testSegment creates a fresh segment for one test and destroys it after.
func testSegment(t testing.TB, sizeMiB, ports, dyn int) *Segment {
	t.Helper()
	name := fmt.Sprintf("xsegtest-%d-%s", os.Getpid(), t.Name())
	for i, c := range name {
		if c == '/' {
			name = name[:i] + "_" + name[i+1:]
		}
	}
	Destroy(name)
	s, err := Create(Config{Name: name, SizeMiB: sizeMiB, Ports: ports, DynPorts: dyn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Error(err)
		}
		s.Close()
		Destroy(name)
	})
	return s
}

func TestCreateJoinDestroy(t *testing.T) {
	s := testSegment(t, 16, 8, 4)
	fi, err := os.Stat(shmPath(s.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v, want 0660", fi.Mode().Perm())
	}
	if _, err := Create(Config{Name: s.Name(), SizeMiB: 16, Ports: 8, DynPorts: 4}); !errors.Is(err, errs.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	j, err := Join(s.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	in := j.Info()
	if in.Ports != 8 || in.DynPorts != 4 || in.Size != 16<<20 || in.FreeRequests != in.Requests || in.HeapUsed != 0 {
		t.Errorf("info %+v", in)
	}
	if _, err := Join("xsegtest-no-such-segment"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("join missing: %v", err)
	}
}

func TestJoinOtherVersion(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	s.h.version = Version + 1
	_, err := Join(s.Name())
	s.h.version = Version
	if !errors.Is(err, errs.ErrVersion) {
		t.Fatalf("join of another version: %v, want ErrVersion", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Name: "", SizeMiB: 8, Ports: 4},
		{Name: "a/b", SizeMiB: 8, Ports: 4},
		{Name: "x", SizeMiB: 1, Ports: 4},
		{Name: "x", SizeMiB: 8, Ports: 0},
		{Name: "x", SizeMiB: 8, Ports: 4, DynPorts: 5},
	} {
		if _, err := Create(c); !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", c, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	s := testSegment(t, 16, 8, 4)
	srv, err := s.Bind(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bind(1); !errors.Is(err, errs.ErrPortBusy) {
		t.Fatalf("double bind: %v", err)
	}
	cli, err := s.BindDynamic()
	if err != nil {
		t.Fatal(err)
	}
	if cli.No() < 4 {
		t.Fatalf("dynamic port %d below 4", cli.No())
	}
	r, err := cli.Alloc(8192)
	if err != nil {
		t.Fatal(err)
	}
	r.SetOp(OpWrite)
	r.SetTarget("obj_0001")
	r.SetOffset(4096)
	r.SetSize(5000)
	copy(r.Data(), "hello")
	if err := cli.Submit(r, 1); err != nil {
		t.Fatal(err)
	}
	if err := cli.Submit(r, 1); err == nil {
		t.Fatal("submit of a queued request succeeded")
	}
	if err := cli.Submit(r, 2); err == nil {
		t.Fatal("submit to unbound port succeeded")
	}
	got := srv.Accept(make([]*Request, 8))
	if len(got) != 1 {
		t.Fatalf("accepted %d", len(got))
	}
	g := got[0]
	if g.Op() != OpWrite || g.Target() != "obj_0001" || g.Offset() != 4096 || g.Size() != 5000 || string(g.Data()[:5]) != "hello" || g.Src() != cli.No() {
		t.Fatalf("server saw %v", g)
	}
	g.SetServiced(5000)
	srv.Respond(g, fmt.Errorf("x: %w", errs.ErrLocked))
	rep := cli.Receive(make([]*Request, 8))
	if len(rep) != 1 || !errors.Is(rep[0].Err(), errs.ErrLocked) || rep[0].Serviced() != 5000 {
		t.Fatalf("reply %v err %v", rep, rep[0].Err())
	}
	cli.Put(rep[0])
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if in := s.Info(); in.HeapUsed != 0 || in.FreeRequests != in.Requests {
		t.Fatalf("leak: %+v", in)
	}
	cli.Release()
	srv.Release()
}

func TestForwardKeepsReplyPath(t *testing.T) {
	s := testSegment(t, 8, 8, 4)
	a, _ := s.Bind(1)
	b, _ := s.Bind(2)
	c, _ := s.BindDynamic()
	r, _ := c.Alloc(0)
	r.SetOp(OpInfo)
	if err := c.Submit(r, 1); err != nil {
		t.Fatal(err)
	}
	x := a.Accept(make([]*Request, 1))[0]
	if err := a.Forward(x, 2); err != nil {
		t.Fatal(err)
	}
	y := b.Accept(make([]*Request, 1))[0]
	if p := y.Path(); len(p) != 1 || p[0] != 1 {
		t.Fatalf("path %v", p)
	}
	b.Respond(y, nil)
	rep := c.Receive(make([]*Request, 1))
	if len(rep) != 1 || rep[0].Err() != nil {
		t.Fatalf("reply %v", rep)
	}
	c.Put(rep[0])
}

func TestHeapExhaustionAndReuse(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	p, _ := s.Bind(0)
	var held []*Request
	for {
		r, err := p.Alloc(64 << 10)
		if err != nil {
			if !errors.Is(err, errs.ErrNoSpace) {
				t.Fatal(err)
			}
			break
		}
		held = append(held, r)
	}
	if len(held) < 10 {
		t.Fatalf("only %d 64K buffers in an 8 MiB segment", len(held))
	}
	if _, err := p.Alloc(1 << 30); !errors.Is(err, errs.ErrTooLarge) {
		t.Fatalf("huge alloc: %v", err)
	}
	// Free every other one, then a large one must fail and small ones fit.
	for i := 0; i < len(held); i += 2 {
		p.Put(held[i])
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(held); i += 2 {
		p.Put(held[i])
	}
	r, err := p.Alloc(len(held) * 32 << 10)
	if err != nil {
		t.Fatalf("coalesced alloc: %v", err)
	}
	p.Put(r)
}

func TestWaitWakes(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	srv, _ := s.Bind(0)
	cli, _ := s.Bind(1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]*Request, 4)
		for {
			srv.Wait(10 * time.Second)
			for _, r := range srv.Accept(buf) {
				srv.Respond(r, nil)
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	r, _ := cli.Alloc(0)
	start := time.Now()
	cli.Submit(r, 0)
	for len(cli.Receive(make([]*Request, 1))) == 0 {
		cli.Wait(10 * time.Second)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("wake took %v", d)
	}
	wg.Wait()
	cli.Put(r)
}

func TestConcurrentGoroutines(t *testing.T) {
	s := testSegment(t, 32, 8, 4)
	srv, _ := s.Bind(0)
	done := make(chan struct{})
	stopped := make(chan struct{})
	defer func() { close(done); <-stopped }()
	go func() {
		defer close(stopped)
		buf := make([]*Request, 32)
		for {
			select {
			case <-done:
				return
			default:
			}
			srv.Wait(50 * time.Millisecond)
			for _, r := range srv.Accept(buf) {
				copy(r.Data(), r.Target())
				srv.Respond(r, nil)
			}
		}
	}()
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			p, err := s.BindDynamic()
			if err != nil {
				t.Error(err)
				return
			}
			defer p.Release()
			buf := make([]*Request, 8)
			for i := 0; i < 500; i++ {
				r, err := p.Alloc(4096 * (1 + i%3))
				if err != nil {
					t.Error(err)
					return
				}
				name := fmt.Sprintf("c%d-%d", c, i)
				r.SetTarget(name)
				r.SetSize(uint64(len(name)))
				if err := p.Submit(r, 0); err != nil {
					t.Error(err)
					return
				}
				var got []*Request
				for got = p.Receive(buf); len(got) == 0; got = p.Receive(buf) {
					p.Wait(time.Second)
				}
				if string(got[0].Data()) != name {
					t.Errorf("got %q want %q", got[0].Data(), name)
				}
				p.Put(got[0])
			}
		}(c)
	}
	wg.Wait()
}
