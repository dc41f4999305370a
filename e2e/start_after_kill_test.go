package e2e_test

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestArchipelagoStartRightAfterAKill: a peer killed with SIGKILL reads
// as dead (a zombie) a moment before its last thread lets go of its
// pidfile's lock. A start in that moment found a lock holder and a
// pidfile naming no live process, and failed "has not written its pid
// yet (starting?)" (seen by the crash test under load). Here the moment
// lasts: the test holds the lock of the dead peer's pidfile for 300 ms.
func TestArchipelagoStartRightAfterAKill(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	path := e.Cfg.PidFile("blockerb")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid := atoi(strings.Fields(string(b))[0])
	syscall.Kill(pid, syscall.SIGKILL)
	testutil.WaitFor(t, 10*time.Second, "blockerb to die", func() bool { return !xseg.ProcessAlive(pid) })
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// Blocking: the dead peer may still hold it (the very moment this is
	// about; a non-blocking try here failed 3 times in 4).
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.Close()
	}()
	out := e.Must("archipelago", "start")
	if !strings.Contains(out, "blockerb: started") {
		t.Fatalf("start after blockerb's death:\n%s", out)
	}
	e.Must("archipelago", "status")
}
