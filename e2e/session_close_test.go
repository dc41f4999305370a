package e2e_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestSessionCloseWhileVlmcdRestarts: a client that wrote leaves while
// vlmcd is down (killed, not restarted yet), so its session's CLOSE finds
// no peer. Once vlmcd is back the CLOSE goes through and the lock a write
// took goes back. (It stayed for good before: another host's writes then
// waited forever; found by TestCrashUnderLoadSharedDirectory.)
func TestSessionCloseWhileVlmcdRestarts(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	// vlmcd dies alone: in its own program in every layout.
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", NotHosted: []string{"vlmcd"}})
	e.Start()
	const vol = "left-during-restart"
	e.Must("vlmc", "create", vol, "--size", "16M")
	s := testutil.StartQemuSession(t, e.URI(vol))
	s.Must("write -P 7 0 64k")
	s.Must("flush")
	if o := lockOwnerOf(t, e, vol); o != "host-a" {
		t.Fatalf("after a write the lock is held by %q", o)
	}
	pid := peer.ReadPidfile(e.Cfg.PidFile("vlmcd")).PID
	if pid == 0 {
		t.Fatal("no vlmcd pid")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	testutil.WaitFor(t, 10*time.Second, "vlmcd to die", func() bool { return !xseg.ProcessAlive(pid) })
	s.Close() // the connection ends: its CLOSE finds no vlmcd
	time.Sleep(200 * time.Millisecond)
	e.Must("archipelago", "start")
	testutil.WaitFor(t, 20*time.Second, "the lock to go back", func() bool { return lockOwnerOf(t, e, vol) == "" })
	if err := testutil.QemuIO(t, e.URI(vol), "read -P 7 0 64k"); err != nil {
		t.Fatal(err)
	}
}
