package mapper

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/xseg"
)

// stack is a mapper with its two blockers (over memstore, the maps one
// through a faultstore) in this process, and a client of the mapper.
type stack struct {
	m     *Mapper
	stopM func() // stops the mapper's peer (once)
	maps  *memstore.Store
	plan  *faultstore.Plan
	vc    *volclient.Client // of the mapper's port
}

// startStack starts the stack on a segment of its own; at cleanup it
// stops it, closing the mapper first.
func startStack(t *testing.T) *stack {
	t.Helper()
	seg := testbin.Segment(t, "mapper", 32)
	s := &stack{maps: memstore.New(), plan: faultstore.NewPlan(1)}
	start := func(role string, port int, h peer.Handler) func() {
		p, err := peer.Start(peer.Options{Role: role, Segment: seg.Name(), PortStart: port, PortEnd: port,
			NrOps: 16, NrThreads: 2, Logger: slog.New(slog.DiscardHandler)}, h)
		if err != nil {
			t.Fatalf("start %s: %v", role, err)
		}
		stop := sync.OnceFunc(p.Stop)
		t.Cleanup(stop)
		return stop
	}
	start("blockerb", 1, blocker.New(memstore.New(), "host-a"))
	start("blockerm", 2, blocker.New(faultstore.Wrap(s.maps, s.plan), "host-a"))
	s.m = New(volume.Options{Owner: "host-a"}, 2, 1)
	s.stopM = start("mapperd", 3, s.m)
	t.Cleanup(s.m.Close)
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s.vc = volclient.New(c, 3)
	return s
}

// lockOwner is who holds volume vol's lock in the maps store ("" nobody).
func (s *stack) lockOwner(t *testing.T, vol string) string {
	o, err := s.maps.LockOwner(context.Background(), vol+"_lock")
	if errors.Is(err, errs.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestReleaseRetriedWithoutSession: a write to a volume that does not
// exist takes its free lock before it finds no header and gives it back;
// that unlock fails (the maps blocker restarting, say). No session was
// ever opened at this mapper, yet the lock goes back once the blocker
// answers again: the reaper, which tries failed releases again, runs from
// the engine's start (it started at the first session: the lock stayed
// taken for good, and other hosts' writes waited for it).
func TestReleaseRetriedWithoutSession(t *testing.T) {
	defer func(d time.Duration) { reapEvery = d }(reapEvery)
	reapEvery = 10 * time.Millisecond
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const vol = "gone"
	// The TryLock passes, the Unlock after it fails.
	f := s.plan.Inject(faultstore.Rule{Ops: faultstore.OpLock, Object: func(n string) bool { return n == vol+"_lock" },
		Skip: 1, Times: 1, Errno: syscall.EIO})
	err := s.vc.Do(ctx, volclient.Call{Op: xseg.OpMapW, Target: vol, Offset: 0, Size: 4096, BufLen: 1024})
	if !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("MAPW of a missing volume: %v, want ErrNotFound", err)
	}
	if f.Hits() != 1 {
		t.Fatalf("the fault hit %d calls, want the unlock", f.Hits())
	}
	if o := s.lockOwner(t, vol); o != "host-a" {
		t.Fatalf("after the failed unlock the lock is held by %q, want host-a", o)
	}
	f.Remove()
	testutil.WaitFor(t, 30*time.Second, "the lock of the missing volume to be given back", func() bool {
		return s.lockOwner(t, vol) == ""
	})
}

// TestCloseStopsReaper: once Close returns, the reaper no longer runs, so
// the mapper's peer can stop and unmap the segment while the process goes
// on (a host process stopping one role, a test). The reaper looks at the
// owner of a session's port in the segment every reapEvery: run after the
// peer's Stop it faults on the unmapped segment (go test fails, -race or
// not), as it did when nothing stopped it.
func TestCloseStopsReaper(t *testing.T) {
	defer func(d time.Duration) { reapEvery = d }(reapEvery)
	reapEvery = time.Millisecond
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.vc.Create(ctx, "vol", 4<<20); err != nil {
		t.Fatal(err)
	}
	// A session the reaper checks, left open.
	if _, err := s.vc.OpenSession(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	s.m.Close()
	s.stopM()
	// Many rounds of a reaper that would still run.
	time.Sleep(100 * reapEvery)
	s.m.Close() // again: nothing to do
}
