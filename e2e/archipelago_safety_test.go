package e2e_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// rolePids returns the pid each role's pidfile names (0: none).
func rolePids(e *e2etest.Env) map[string]int {
	m := map[string]int{}
	for _, r := range e.Cfg.Roles {
		m[r.Name] = peer.ReadPidfile(e.Cfg.PidFile(r.Name)).PID
	}
	return m
}

// mappers returns the pids of the processes that map the segment's file,
// in place or deleted.
func mappers(name string) []int {
	path := filepath.Join(xseg.ShmDir, name)
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/maps")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasSuffix(line, " "+path) || strings.HasSuffix(line, " "+path+" (deleted)") {
				if xseg.ProcessAlive(pid) {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

// TestArchipelagoDeletedSegment: the segment's file is removed under
// running peers (systemd-logind's RemoveIPC, a cleanup script). status
// says so and fails; start refuses to run a second set beside them; the
// peers log it; stop finds and stops them, even one whose pidfile is gone.
func TestArchipelagoDeletedSegment(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	before := rolePids(e)
	seg := e.Cfg.XSEG.Name
	if err := os.Remove(filepath.Join(xseg.ShmDir, seg)); err != nil {
		t.Fatal(err)
	}

	out, err := e.Run("archipelago", "status")
	if err == nil || !strings.Contains(out, "removed or replaced") || !strings.Contains(out, "blockerb (pid "+strconv.Itoa(before["blockerb"])) {
		t.Errorf("status with the segment removed under running peers: %v\n%s", err, out)
	}
	out, err = e.Run("archipelago", "start")
	if err == nil || !strings.Contains(out, "archipelago stop") {
		t.Errorf("start beside peers on a removed segment: %v\n%s", err, out)
	}
	if after := rolePids(e); len(mappers(seg)) != e.Processes() || after["vlmcd"] != before["vlmcd"] {
		t.Fatalf("after start: pids %v (before %v), %d processes on the segment", after, before, len(mappers(seg)))
	}
	if xseg.Exists(seg) {
		t.Errorf("the refused start made a segment")
	}
	// Each peer says in its log that its segment is gone.
	for _, r := range e.Cfg.Roles {
		testutil.WaitFor(t, 20*time.Second, r.Name+" to log the removed segment", func() bool {
			b, _ := os.ReadFile(e.Cfg.LogFile(r.Name))
			return strings.Contains(string(b), "segment file gone") && strings.Contains(string(b), "was removed")
		})
	}

	// A peer that no pidfile names any more is found by what it maps
	// (hosted, the process of every hosted role).
	for _, r := range e.SameProcess("vlmcd") {
		os.Remove(e.Cfg.PidFile(r))
	}
	out, err = e.Run("archipelago", "status")
	if err == nil || !strings.Contains(out, "orphan on a deleted segment") {
		t.Errorf("status with a peer named by no pidfile: %v\n%s", err, out)
	}
	out = e.Must("archipelago", "stop")
	if !strings.Contains(out, "which no pidfile named") {
		t.Errorf("stop did not say it stopped the orphan:\n%s", out)
	}
	for role, pid := range before {
		if xseg.ProcessAlive(pid) {
			t.Errorf("%s (pid %d) still runs after stop", role, pid)
		}
	}
	if left := mappers(seg); len(left) > 0 {
		t.Errorf("processes still on the segment after stop: %v", left)
	}
	e.Start()
	e.Must("archipelago", "status")
}

// TestArchipelagoConcurrentStarts: two starts at once, ten times: the
// peers run once (each role started by exactly one of them, the other
// finds it running), and stop leaves no process behind.
func TestArchipelagoConcurrentStarts(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	e.Must("archipelago", "stop")
	seg := e.Cfg.XSEG.Name
	for round := 0; round < 10; round++ {
		var wg sync.WaitGroup
		outs := make([]string, 2)
		errs := make([]error, 2)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], errs[i] = e.Run("archipelago", "start")
			}()
		}
		wg.Wait()
		for i := range outs {
			if errs[i] != nil {
				t.Fatalf("round %d: start %d: %v\n%s\nthe other said:\n%s", round, i, errs[i], outs[i], outs[1-i])
			}
		}
		for _, r := range e.Cfg.Roles {
			n := strings.Count(outs[0]+outs[1], r.Name+": started")
			m := strings.Count(outs[0]+outs[1], r.Name+": already running")
			if n != 1 || m != 1 {
				t.Fatalf("round %d: %s started %d times, found running %d times:\n%s\n---\n%s", round, r.Name, n, m, outs[0], outs[1])
			}
		}
		if got := len(mappers(seg)); got != e.Processes() {
			t.Fatalf("round %d: %d processes on the segment, want %d", round, got, e.Processes())
		}
		pids := rolePids(e)
		e.Must("archipelago", "status")
		e.Must("archipelago", "stop")
		for role, pid := range pids {
			if xseg.ProcessAlive(pid) {
				t.Fatalf("round %d: %s (pid %d) survived stop", round, role, pid)
			}
		}
		if left := mappers(seg); len(left) > 0 {
			t.Fatalf("round %d: processes on the segment after stop: %v", round, left)
		}
	}
}

// TestArchipelagoStartSmallShm: a /dev/shm smaller than SEGMENT_SIZE makes
// start fail at once, naming the size and the free space, and leave
// nothing behind (before, start succeeded and writes failed later with
// EIO). The small /dev/shm is a tmpfs mounted in a mount namespace of the
// start's own.
func TestArchipelagoStartSmallShm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace with a small tmpfs on /dev/shm)")
	}
	e := e2etest.New(t, "host-a", "")
	arch := testbin.Path(t, "archipelago")
	script := `mount -t tmpfs -o size=64m archtest /dev/shm && exec "$0" --config "$1" start`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, arch, e.Config)
	b, err := cmd.CombinedOutput()
	out := string(b)
	if strings.Contains(out, "unshare failed") || strings.Contains(out, "mount:") {
		t.Skipf("no mount namespace here: %s", out)
	}
	if err == nil {
		t.Fatalf("start on a 64 MiB /dev/shm with a 256 MiB segment succeeded:\n%s", out)
	}
	for _, want := range []string{"256 MiB", "SEGMENT_SIZE", "MiB free", "/dev/shm"} {
		if !strings.Contains(out, want) {
			t.Errorf("start says %q, lacks %q", out, want)
		}
	}
	for role, pid := range rolePids(e) {
		if pid != 0 {
			t.Errorf("%s runs (pid %d) after the failed start", role, pid)
		}
	}
}

// TestArchipelagoFailedStart: a start that fails quotes only this run's
// log lines and removes the segment it made.
func TestArchipelagoFailedStart(t *testing.T) {
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", DataDir: "/dev/null/data"})
	os.MkdirAll(e.Cfg.LogDir, 0o755)
	os.WriteFile(e.Cfg.LogFile("blockerb"), []byte("a line of an earlier run\n"), 0o644)
	out, err := e.Run("archipelago", "start")
	if err == nil {
		t.Fatalf("start with an unusable data directory succeeded:\n%s", out)
	}
	if strings.Contains(out, "earlier run") {
		t.Errorf("the failed start quotes an earlier run's log:\n%s", out)
	}
	if !strings.Contains(out, "/dev/null/data") {
		t.Errorf("the failed start does not quote this run's error:\n%s", out)
	}
	if xseg.Exists(e.Cfg.XSEG.Name) {
		t.Errorf("the failed start left its segment behind:\n%s", out)
	}
}

// TestArchipelagoStopCountsClientsNow: stop decides on the clients
// connected at that moment: one that has just connected makes it refuse,
// and once it has gone stop goes on.
func TestArchipelagoStopCountsClientsNow(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	conn, err := net.Dial("unix", e.Socket())
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.Run("archipelago", "stop")
	if err == nil || !strings.Contains(out, "1 NBD client(s) connected") {
		t.Errorf("stop with a client that has just connected: %v\n%s", err, out)
	}
	// The refused stop left the socket where clients find it.
	if c2, err := net.Dial("unix", e.Socket()); err != nil {
		t.Errorf("connect after a refused stop: %v", err)
	} else {
		c2.Close()
	}
	conn.Close()
	e.Must("archipelago", "stop")

	// The same over TCP.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e = e2etest.New(t, "host-a", "[nbd]\nlisten = "+addr+"\n")
	e.Start()
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	out, err = e.Run("archipelago", "stop")
	if err == nil || !strings.Contains(out, "1 NBD client(s) connected") {
		t.Errorf("stop with a TCP client that has just connected: %v\n%s", err, out)
	}
	tc.Close()
	e.Must("archipelago", "stop")
}

// TestArchipelagoStopOtherUser: stop by a user who may not signal the
// peers says so at once.
func TestArchipelagoStopOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (to run stop as another user)")
	}
	e := e2etest.New(t, "host-a", "")
	e.Start()
	for _, d := range []string{filepath.Dir(e.Dir), e.Dir, e.Cfg.RunDir, testbin.Dir(t)} {
		os.Chmod(d, 0o755)
	}
	os.Chmod(e.Config, 0o644)
	cmd := exec.Command(testbin.Path(t, "archipelago"), "--config", e.Config, "stop")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	t0 := time.Now()
	b, err := cmd.CombinedOutput()
	took := time.Since(t0)
	if err == nil || !strings.Contains(string(b), "permission denied") || !strings.Contains(string(b), "pid ") || strings.Contains(string(b), "-f") {
		t.Errorf("stop as nobody: %v\n%s", err, b)
	}
	if took > 10*time.Second {
		t.Errorf("stop as nobody took %v to fail", took)
	}
	e.Must("archipelago", "status")
}

// TestArchipelagoExtraPeer: a peer of no role of the configuration on the
// segment (nulld for `xseg load`) is shown by status without failing it;
// a full stop stops it with the rest (the segment goes away under it).
func TestArchipelagoExtraPeer(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	nulld := testbin.Start(t, "nulld", "--segment", e.Cfg.XSEG.Name, "--portno-start", "600")
	testutil.WaitFor(t, 10*time.Second, "nulld on port 600", func() bool { return len(mappers(e.Cfg.XSEG.Name)) == e.Processes()+1 })
	out := e.Must("archipelago", "status")
	if !strings.Contains(out, "extra") || !strings.Contains(out, strconv.Itoa(nulld.Cmd.Process.Pid)) {
		t.Errorf("status does not show the extra peer:\n%s", out)
	}
	out = e.Must("archipelago", "stop")
	if err := nulld.Wait(10 * time.Second); err != nil {
		t.Errorf("nulld after stop: %v\n%s", err, out)
	}
}
