package e2e_test

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

func TestArchipelagoStartStatusStop(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	if out, err := e.Run("archipelago", "status"); err == nil {
		t.Fatalf("status exits 0 with nothing running:\n%s", out)
	}
	e.Start()
	out := e.Must("archipelago", "status")
	for _, role := range []string{"blockerb", "blockerm", "mapperd", "vlmcd", "nbd"} {
		if !strings.Contains(out, role) {
			t.Errorf("status lacks %s:\n%s", role, out)
		}
	}
	if strings.Count(out, "running") != 5 {
		t.Errorf("status:\n%s", out)
	}
	// Idempotent.
	if out := e.Must("archipelago", "start"); strings.Count(out, "already running") != 5 {
		t.Errorf("second start:\n%s", out)
	}
	for _, r := range e.Cfg.Roles {
		if _, err := os.Stat(e.Cfg.PidFile(r.Name)); err != nil {
			t.Errorf("pidfile of %s: %v", r.Name, err)
		}
		if _, err := os.Stat(e.Cfg.LogFile(r.Name)); err != nil {
			t.Errorf("log of %s: %v", r.Name, err)
		}
	}
	// One role (hosted, with those of its process: they stop together).
	one := e.SameProcess("vlmcd")
	e.Must("archipelago", append([]string{"stop"}, one...)...)
	if out, err := e.Run("archipelago", "status"); err == nil || !strings.Contains(out, "stopped") {
		t.Errorf("status with %v stopped exits 0 or says nothing:\n%s", one, out)
	}
	e.Must("archipelago", append([]string{"start"}, one...)...)
	e.Must("archipelago", "restart")
	e.Must("archipelago", "status")
	out = e.Must("archipelago", "stop")
	if !strings.Contains(out, "segment") {
		t.Errorf("stop did not remove the segment:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join("/dev/shm", e.Cfg.XSEG.Name)); !os.IsNotExist(err) {
		t.Errorf("segment left behind: %v", err)
	}
}

func TestArchipelagoStartCleansStaleSegment(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	// A crash: every peer killed, the segment left behind.
	var pids []int
	for _, r := range e.Cfg.Roles {
		if pid := peer.ReadPidfile(e.Cfg.PidFile(r.Name)).PID; pid != 0 {
			pids = append(pids, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range pids {
		testutil.WaitFor(t, 10*time.Second, "killed peers to be gone", func() bool { return !xseg.ProcessAlive(pid) })
	}
	out := e.Must("archipelago", "start")
	if !strings.Contains(out, "stale") {
		t.Errorf("start after a crash did not clean the segment:\n%s", out)
	}
	e.Must("archipelago", "status")
}

// TestArchipelagoStartOtherVersion checks start with a segment another
// version of Archipelago left: replaced if none of its peers runs, refused
// (naming the role) if one does.
func TestArchipelagoStartOtherVersion(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	x := e.Cfg.XSEG
	old := func() {
		t.Helper()
		xseg.Destroy(x.Name)
		seg, err := xseg.Create(xseg.Config{Name: x.Name, SizeMiB: x.SizeMiB, Ports: x.Ports, DynPorts: x.DynPorts})
		if err != nil {
			t.Fatal(err)
		}
		seg.Close()
		f, err := os.OpenFile(filepath.Join(xseg.ShmDir, x.Name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The version word follows the 8-byte magic.
		var v [4]byte
		binary.LittleEndian.PutUint32(v[:], xseg.Version-1)
		if _, err := f.WriteAt(v[:], 8); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := xseg.Join(x.Name); !errors.Is(err, errs.ErrVersion) {
			t.Fatalf("the fake old segment joins: %v", err)
		}
	}
	old()
	out := e.Must("archipelago", "start")
	if !strings.Contains(out, "stale") {
		t.Errorf("start over another version's segment did not replace it:\n%s", out)
	}
	e.Must("archipelago", "stop")

	// A peer of the old version still runs (a process whose pid is in a
	// role's pidfile).
	old()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sleeper := cmd.Process.Pid
	os.MkdirAll(e.Cfg.RunDir, 0o755)
	os.WriteFile(e.Cfg.PidFile(e.Cfg.Roles[0].Name), []byte(strconv.Itoa(sleeper)+"\n"), 0o644)
	out, err := e.Run("archipelago", "start")
	if err == nil || !strings.Contains(out, "still runs") || !strings.Contains(out, e.Cfg.Roles[0].Name) {
		t.Errorf("start over a segment of another version in use: %v\n%s", err, out)
	}
	if _, err := xseg.Join(x.Name); !errors.Is(err, errs.ErrVersion) {
		t.Errorf("the segment in use was replaced: %v", err)
	}
	os.Remove(e.Cfg.PidFile(e.Cfg.Roles[0].Name))
	xseg.Destroy(x.Name)
}

func TestArchipelagoErrors(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	if out, err := e.Run("archipelago", "start", "nosuchrole"); err == nil || !strings.Contains(out, `no role "nosuchrole"`) {
		t.Errorf("start of an unknown role: %v\n%s", err, out)
	}
	bad := filepath.Join(e.Dir, "bad.conf")
	os.WriteFile(bad, []byte("[XSEG]\nSEGMENT_PORTS = lots\n"), 0o644)
	out, err := e.Run("archipelago", "--config", bad, "status")
	if err == nil || !strings.Contains(out, "bad.conf:2") || !strings.Contains(out, "SEGMENT_PORTS") {
		t.Errorf("bad config: %v\n%s", err, out)
	}
	if out := e.Must("archipelago", "config"); !strings.Contains(out, "SEGMENT_NAME = "+e.Cfg.XSEG.Name) {
		t.Errorf("config does not print the effective config:\n%s", out)
	}
	if out := e.Must("archipelago", "config", "--default"); !strings.Contains(out, "[PEERS]") {
		t.Errorf("config --default:\n%s", out)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
