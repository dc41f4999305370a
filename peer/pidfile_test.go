package peer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestPidfileOneProcessPerRole: the pidfile, not the segment, says who
// serves a role. A second process for it fails even on another segment
// (one whose file was deleted and made again, say); a peer that drains
// slowly at exit keeps its pidfile until it is gone and never removes a
// successor's; a killed peer's pidfile is stale and taken over.
func TestPidfileOneProcessPerRole(t *testing.T) {
	s1 := testbin.Segment(t, "peertest-a", 16)
	s2 := testbin.Segment(t, "peertest-b", 16)
	pidfile := filepath.Join(t.TempDir(), "role.pid")
	start := func(s *xseg.Segment, extra ...string) *testbin.Proc {
		return testbin.Start(t, "nulld", append([]string{"--segment", s.Name(), "--portno-start", "1", "--pidfile", pidfile}, extra...)...)
	}
	names := func(p *testbin.Proc) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("the pidfile to name pid %d", p.Cmd.Process.Pid), func() bool {
			pi := peer.ReadPidfile(pidfile)
			return pi.PID == p.Cmd.Process.Pid && pi.Held && pi.Alive
		})
	}
	first := start(s1, "--delay", "3s", "--nr-ops", "1")
	names(first)

	second := start(s2)
	if err := second.Wait(20 * time.Second); err == nil {
		t.Fatal("a second process for the role started on another segment")
	}
	if out := second.Output(); !strings.Contains(out, fmt.Sprintf("held by pid %d", first.Cmd.Process.Pid)) {
		t.Errorf("second process says %q, want the holder's pid", out)
	}
	if pi := peer.ReadPidfile(pidfile); pi.PID != first.Cmd.Process.Pid || !pi.Held {
		t.Fatalf("after the refused second process the pidfile says %+v", pi)
	}

	// The first one stops slowly: a request takes 3 s.
	c, err := peer.NewClient(s1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, _ := c.Alloc(0)
	r.SetOp(xseg.OpPing)
	replied := make(chan struct{})
	go func() {
		rep, _ := c.Call(context.Background(), r, 1)
		if rep != nil {
			c.Put(rep)
		}
		close(replied)
	}()
	testutil.WaitFor(t, 10*time.Second, "the slow request in flight", func() bool {
		ps, _ := s1.PortStat(1)
		return ps.InFlight == 1
	})
	first.Cmd.Process.Signal(os.Interrupt)
	third := start(s2)
	if err := third.Wait(20 * time.Second); err == nil {
		t.Fatal("a successor started while the old peer was still draining")
	}
	if err := first.Wait(20 * time.Second); err != nil {
		t.Fatalf("first peer: %v\n%s", err, first.Output())
	}
	<-replied
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Fatalf("the stopped peer left its pidfile: %v", err)
	}

	fourth := start(s2)
	names(fourth)
	fourth.Kill()
	if pi := peer.ReadPidfile(pidfile); !pi.Exists || pi.Held || pi.Alive || pi.Running() {
		t.Errorf("pidfile of a killed peer: %+v", pi)
	}
	fifth := start(s1)
	names(fifth)
	if err := fifth.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind: %v", err)
	}
}

// TestPidfileOfAnotherProcess: a pidfile from before the lock (a bare
// pid) counts only for a process that started before it was written; a
// pid reused since does not count.
func TestPidfileOfAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "self.pid")
	os.WriteFile(self, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
	if pi := peer.ReadPidfile(self); !pi.Alive || pi.Held || pi.PID != os.Getpid() {
		t.Errorf("bare pidfile of a live process started before it: %+v", pi)
	}
	old := time.Now().Add(-24 * 365 * time.Hour)
	os.Chtimes(self, old, old)
	if pi := peer.ReadPidfile(self); pi.Alive {
		t.Errorf("bare pidfile written before its process started: %+v", pi)
	}
	// A start time that is not the process's: the pid was reused.
	os.WriteFile(self, []byte(fmt.Sprintf("%d 1\n", os.Getpid())), 0o644)
	if pi := peer.ReadPidfile(self); pi.Alive || pi.Running() {
		t.Errorf("pidfile with another start time: %+v", pi)
	}

	// A peer from before the lock runs: its pidfile is neither taken over
	// nor removed.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	legacy := filepath.Join(dir, "legacy.pid")
	os.WriteFile(legacy, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644)
	if _, err := peer.TakePidfile(legacy); !errors.Is(err, errs.ErrBusy) || !strings.Contains(err.Error(), strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("TakePidfile of a running legacy peer's pidfile: %v", err)
	}
	if peer.RemoveStalePidfile(legacy) {
		t.Error("a running legacy peer's pidfile removed")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !peer.RemoveStalePidfile(legacy) {
		t.Error("a dead peer's pidfile not removed")
	}

	// A held pidfile is never removed by another.
	held := filepath.Join(dir, "held.pid")
	pf, err := peer.TakePidfile(held)
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.WritePid(); err != nil {
		t.Fatal(err)
	}
	if peer.RemoveStalePidfile(held) {
		t.Error("a held pidfile removed")
	}
	if pi := peer.ReadPidfile(held); !pi.Held || pi.PID != os.Getpid() {
		t.Errorf("held pidfile: %+v", pi)
	}
	pf.Remove()
	if _, err := os.Stat(held); !os.IsNotExist(err) {
		t.Errorf("Remove left the pidfile: %v", err)
	}
}
