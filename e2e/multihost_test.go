package e2e_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// Two hosts on one machine, each with its own segment, run dir and
// HOST_ID, sharing one storage: here a directory for filed; the ceph
// build tag adds the same test on a RADOS pool.
func TestTwoHostsSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	o := e2etest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"}
	twoHosts(t, o)
}

// killAll kills a host's peers with SIGKILL (a host crash) and waits for
// them to be gone.
func killAll(t *testing.T, e *e2etest.Env) {
	t.Helper()
	for _, r := range e.Cfg.Roles {
		pid := peer.ReadPidfile(e.Cfg.PidFile(r.Name)).PID
		if pid == 0 {
			continue
		}
		syscall.Kill(pid, syscall.SIGKILL)
		testutil.WaitFor(t, 10*time.Second, r.Name+" to die", func() bool { return !xseg.ProcessAlive(pid) })
	}
}

func twoHosts(t *testing.T, o e2etest.Options) {
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, o)
	a.Start()
	b.Start()
	const vol = "migrating-disk"
	a.Must("vlmc", "create", vol, "--size", "64M")
	if err := testutil.QemuIO(t, a.URI(vol), "write -P 1 0 4M"); err != nil { // A's write takes the lock
		t.Fatal(err)
	}
	// Created on A: listed and readable on B.
	if !strings.Contains(b.Must("vlmc", "list"), vol) {
		t.Fatal("B does not list A's volume")
	}
	if err := testutil.QemuIO(t, b.URI(vol), "read -P 1 0 4M"); err != nil {
		t.Fatalf("B reads A's volume: %v", err)
	}
	a.Must("vlmc", "open", vol)
	fails(t, b, []string{"snapshot", vol, vol + "-snap"}, "locked by host-a")
	fails(t, b, []string{"remove", vol}, "locked by host-a")

	// B's write waits while A holds the volume (the hand-off of a live
	// migration: A open, B waits, A closes, B opens).
	done := make(chan error, 1)
	go func() { done <- testutil.QemuIO(t, b.URI(vol), "write -P 2 8M 1M") }()
	select {
	case err := <-done:
		t.Fatalf("B's write did not wait for A's lock: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	if err := testutil.QemuIO(t, a.URI(vol), "write -P 3 16M 1M", "flush"); err != nil {
		t.Fatalf("A's last write: %v", err)
	}
	a.Must("vlmc", "close", vol)
	closed := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("B's waiting write: %v", err)
		}
		t.Logf("B's waiting write went on %v after A's close returned", time.Since(closed).Round(time.Millisecond))
	case <-time.After(60 * time.Second):
		t.Fatal("B's write still waits after A closed")
	}
	b.Must("vlmc", "open", vol)
	if err := testutil.QemuIO(t, b.URI(vol), "read -P 1 0 4M", "read -P 2 8M 1M", "read -P 3 16M 1M"); err != nil {
		t.Fatalf("a write was lost in the hand-off: %v", err)
	}
	fails(t, a, []string{"lock", vol}, "locked by host-b")

	// B crashes: its lock stays; B restarts and takes it back.
	killAll(t, b)
	fails(t, a, []string{"lock", vol}, "locked by host-b")
	b.Must("archipelago", "start")
	b.Must("vlmc", "open", vol)
	// B crashes for good: A breaks the lock with force.
	killAll(t, b)
	fails(t, a, []string{"open", vol}, "locked by host-b")
	a.Must("vlmc", "unlock", "-f", vol)
	a.Must("vlmc", "open", vol)
	if err := testutil.QemuIO(t, a.URI(vol), "read -P 2 8M 1M", "read -P 3 16M 1M"); err != nil {
		t.Fatal(err)
	}
}
