package xseg

import (
	"os/exec"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) uint32 {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return uint32(cmd.Process.Pid)
}

// A process that died inside the heap's critical section leaves the lock
// held and the bitmap half-updated: the next allocator takes the lock over
// and rebuilds the bitmap from the requests.
func TestHeapLockTakenOverFromDeadHolder(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	p, _ := s.Bind(0)
	keep, err := p.Alloc(3 * UnitSize)
	if err != nil {
		t.Fatal(err)
	}
	dead := deadPID(t)
	// The dead process had marked units it never recorded in a request,
	// and cleared units of a live buffer.
	s.lockHeap()
	s.setRange(100, 50, true)
	u, _ := s.unitsOf(keep.h)
	s.setRange(u, 1, false)
	s.unlockHeap()
	s.h.heapLock.Store(dead)

	r, err := p.Alloc(UnitSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("after take-over: %v", err)
	}
	if s.Info().Repairs == 0 {
		t.Fatal("no repair counted")
	}
	p.Put(r)
	p.Put(keep)
}

// A process that died inside a port's critical section (between setting a
// request's state and pushing it) leaves the ring short: the next locker
// rebuilds it from the request states.
func TestPortLockTakenOverFromDeadHolder(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	srv, _ := s.Bind(0)
	cli, _ := s.Bind(1)
	a, _ := cli.Alloc(0)
	b, _ := cli.Alloc(0)
	if err := cli.Submit(a, 0); err != nil {
		t.Fatal(err)
	}
	// b: state says queued at 0, but the ring never got it.
	b.h.dst = 0
	b.h.src = 1
	b.h.srcGen = cli.p.bindGen.Load()
	b.h.state.Store(packState(stQueued, 0))
	s.port(0).lock.Store(deadPID(t))

	got := srv.Accept(make([]*Request, 8))
	if len(got) != 2 {
		t.Fatalf("accepted %d requests after repair, want 2", len(got))
	}
	for _, r := range got {
		srv.Respond(r, nil)
	}
	for _, r := range cli.Receive(make([]*Request, 8)) {
		cli.Put(r)
	}
}

// Requests held by a dead process are reclaimed; requests it was serving
// fail back to their submitters; its ports are unbound.
func TestRecoverReclaimsDeadProcess(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	cli, _ := s.Bind(1)
	srv, _ := s.Bind(0)
	dead := deadPID(t)
	// A request the dead process was filling, with a buffer.
	held, _ := srv.Alloc(2 * UnitSize)
	held.h.state.Store(packState(stAlloc, dead))
	// One it was serving, and one queued to it.
	served, _ := cli.Alloc(UnitSize)
	cli.Submit(served, 0)
	srv.Accept(make([]*Request, 1))
	served.h.state.Store(packState(stAccepted, dead))
	queued, _ := cli.Alloc(0)
	cli.Submit(queued, 0)
	s.port(0).ownerPID.Store(dead)
	s.port(0).ownerStart.Store(0)

	if n := s.Recover(); n != 3 {
		t.Errorf("reclaimed %d, want 3", n)
	}
	reps := cli.Receive(make([]*Request, 8))
	if len(reps) != 2 {
		t.Fatalf("%d replies, want 2", len(reps))
	}
	for _, r := range reps {
		if err := r.Err(); err != errs.ErrPeerDied {
			t.Errorf("reply %v: %v", r, err)
		}
		cli.Put(r)
	}
	if pid, _ := s.Owner(0); pid != 0 {
		t.Errorf("port 0 still bound to %d", pid)
	}
	if in := s.Info(); in.HeapUsed != 0 || in.FreeRequests != in.Requests {
		t.Errorf("leak: %+v", in)
	}
}

// A request whose buffer is lent to a live borrower is not failed back
// until the borrower is done.
func TestRecoverWaitsForBorrowers(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	cli, _ := s.Bind(1)
	mid, _ := s.Bind(0) // stands for a dead vlmcd
	blk, _ := s.Bind(2) // a live blocker
	parent, _ := cli.Alloc(2 * UnitSize)
	cli.Submit(parent, 0)
	mid.Accept(make([]*Request, 1))
	child, _ := mid.Alloc(0)
	if err := child.Borrow(parent, UnitSize, UnitSize); err != nil {
		t.Fatal(err)
	}
	mid.Submit(child, 2)
	dead := deadPID(t)
	parent.h.state.Store(packState(stAccepted, dead))
	s.port(0).ownerPID.Store(dead)

	s.Recover()
	if n := len(cli.Receive(make([]*Request, 4))); n != 0 {
		t.Fatalf("parent failed back while its buffer is lent")
	}
	c := blk.Accept(make([]*Request, 1))[0]
	copy(c.Data(), "late write")
	blk.Respond(c, nil) // its source port is gone: released
	s.Recover()
	reps := cli.Receive(make([]*Request, 4))
	if len(reps) != 1 || reps[0].Err() != errs.ErrPeerDied {
		t.Fatalf("replies %v", reps)
	}
	cli.Put(reps[0])
}
