package peer

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestFailedRequestsLogged: a request that fails with a storage error is
// logged at level error with its op, target and errno; an expected outcome
// (not found) is not; a flood of failures is cut to the rate and what was
// left out is counted in one line.
func TestFailedRequestsLogged(t *testing.T) {
	name := fmt.Sprintf("peertest-log-%d", time.Now().UnixNano())
	s, err := xseg.Create(xseg.Config{Name: name, SizeMiB: 16, Ports: 16, DynPorts: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer xseg.Destroy(name)
	defer s.Close()
	var out testutil.Buffer
	h := HandlerFunc(func(_ context.Context, _ *Peer, r *xseg.Request) error {
		switch r.Target() {
		case "missing":
			return fmt.Errorf("READ %q: %w", r.Target(), errs.ErrNotFound)
		case "corrupt":
			return fmt.Errorf("map page %q: checksum: %w", r.Target(), errs.ErrCorrupt)
		}
		return fmt.Errorf("READ %q: %w", r.Target(), &fs.PathError{Op: "pread", Path: "/srv/data/" + r.Target(), Err: syscall.EIO})
	})
	p, err := Start(Options{Role: "blockerb", Segment: s.Name(), PortStart: 1, PortEnd: 1, NrOps: 8, NrThreads: 2,
		Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}))}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c, err := NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	read := func(target string) {
		t.Helper()
		r, err := c.Alloc(4096)
		if err != nil {
			t.Fatal(err)
		}
		r.SetOp(xseg.OpRead)
		r.SetTarget(target)
		r.SetSize(4096)
		rep, err := c.Call(context.Background(), r, 1)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Err() == nil {
			t.Fatalf("READ %s succeeded", target)
		}
		c.Put(rep)
	}
	read("missing")
	read("obj_0001")
	read("corrupt")
	log := out.String()
	if strings.Contains(log, "missing") {
		t.Errorf("a not-found read was logged at level error:\n%s", log)
	}
	for _, want := range []string{"level=ERROR", "op=READ", "target=obj_0001", "/srv/data/obj_0001", "errno=EIO", "target=corrupt", "checksum"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	// A failing disk: many failures in a short time.
	p.fails.mu.Lock()
	p.fails.tokens, p.fails.last = 0, time.Now()
	p.fails.mu.Unlock()
	before := strings.Count(out.String(), "request failed")
	const n = 200
	t0 := time.Now()
	for i := 0; i < n; i++ {
		read(fmt.Sprintf("obj_%04d", i))
	}
	logged := strings.Count(out.String(), "request failed") - before
	if limit := 1 + int(time.Since(t0).Seconds()*failRate); logged > limit {
		t.Errorf("%d of %d failures logged in %v, the rate allows %d", logged, n, time.Since(t0), limit)
	}
	p.logDropped() // what the timer does failSummary after the first drop
	if want := fmt.Sprintf("not_logged=%d", n-logged); !strings.Contains(out.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, out.String())
	}
}
