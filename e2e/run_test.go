package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/supervisor"
	"github.com/archipelago-go/archipelago/xseg"
)

// notifySocket listens where $NOTIFY_SOCKET will point, as systemd does,
// and keeps every message.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// lines returns every line received so far, in order.
func (n *notifySocket) lines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.msgs {
		out = append(out, strings.Split(strings.TrimRight(m, "\n"), "\n")...)
	}
	return out
}

func (n *notifySocket) has(line string) bool {
	for _, l := range n.lines() {
		if l == line {
			return true
		}
	}
	return false
}

// runProc is `archipelago run` in the background.
type runProc struct {
	cmd  *exec.Cmd
	out  *testutil.Buffer
	done chan struct{}
	err  error
}

// startRun starts `archipelago run` on e's configuration with
// NOTIFY_SOCKET set to n (if not nil) and the given flags. Cleanup kills
// it and stops what it left.
func startRun(t *testing.T, e *e2etest.Env, n *notifySocket, flags ...string) *runProc {
	t.Helper()
	cmd := exec.Command(testbin.Path(t, "archipelago"), append([]string{"--config", e.Config, "run"}, flags...)...)
	cmd.Env = os.Environ()
	if n != nil {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.path)
	}
	p := &runProc{cmd: cmd, out: &testutil.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if out, err := e.Run("archipelago", "stop", "-f"); err != nil {
			t.Logf("archipelago stop -f: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("archipelago run said:\n%s", p.out)
			for _, r := range e.Cfg.Roles {
				b, _ := os.ReadFile(e.Cfg.LogFile(r.Name))
				t.Logf("log of %s:\n%s", r.Name, b)
			}
		}
	})
	return p
}

// exited reports whether run has exited.
func (p *runProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// statusJSON runs `archipelago status --json` and parses it; ok is its
// exit status 0.
func statusJSON(t *testing.T, e *e2etest.Env) (rep supervisor.Report, ok bool) {
	t.Helper()
	out, err := exec.Command(testbin.Path(t, "archipelago"), "--config", e.Config, "status", "--json").Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("status --json: %v\n%s", jerr, out)
	}
	return rep, err == nil
}

func roleOf(t *testing.T, rep supervisor.Report, name string) supervisor.RoleReport {
	t.Helper()
	for _, r := range rep.Roles {
		if r.Role == name {
			return r
		}
	}
	t.Fatalf("status --json has no role %s: %+v", name, rep.Roles)
	return supervisor.RoleReport{}
}

// TestRunSupervises runs `archipelago run` as archipelago.service does:
// READY=1 once every role runs; a peer killed with SIGKILL is restarted
// (new pid, logged with its signal and attempt); one killed again and
// again is marked failed, and status shows it and fails; restart brings
// it back under supervision; a role stopped with archipelago stop stays
// stopped; SIGTERM stops every peer and run exits 0.
func TestRunSupervises(t *testing.T) {
	// mapperd and nbd die and stop alone: each in its own program in
	// every layout (TestHostedRunRestartsHost: a host's death).
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", NotHosted: []string{"mapperd", "nbd"}})
	n := listenNotify(t)
	p := startRun(t, e, n, "--restart-limit", "3", "--restart-window", "10m")
	testutil.WaitFor(t, time.Minute, "READY=1 from archipelago run", func() bool { return n.has("READY=1") || p.exited() })
	if p.exited() {
		t.Fatalf("archipelago run exited (%v):\n%s", p.err, p.out)
	}
	// READY=1 came after every role was up: status, read now, says so.
	rep, ok := statusJSON(t, e)
	if !ok || rep.Supervisor == nil || rep.Supervisor.PID != p.cmd.Process.Pid || !rep.Segment.Running {
		t.Fatalf("status after READY=1: ok=%v supervisor=%+v segment=%+v problems=%v", ok, rep.Supervisor, rep.Segment, rep.Problems)
	}
	if len(rep.Roles) != len(e.Cfg.Roles) {
		t.Fatalf("status --json lists %d roles, want %d", len(rep.Roles), len(e.Cfg.Roles))
	}
	for _, r := range rep.Roles {
		if r.State != "running" || r.PID == 0 || r.Restarts != 0 || r.Failed {
			t.Errorf("after READY=1: %+v", r)
		}
	}
	if out := e.Must("archipelago", "status"); !strings.Contains(out, fmt.Sprintf("supervised by archipelago run (pid %d", p.cmd.Process.Pid)) {
		t.Errorf("status does not name the supervisor:\n%s", out)
	}
	// A second run on the same configuration refuses.
	if out, err := e.Run("archipelago", "run"); err == nil || !strings.Contains(out, "already supervises") {
		t.Errorf("a second run: %v\n%s", err, out)
	}

	// SIGKILL one peer: restarted, with a new pid, and logged.
	old := roleOf(t, rep, "mapperd").PID
	killAndWaitRestart := func(old, restarts int) int {
		t.Helper()
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var now supervisor.RoleReport
		testutil.WaitFor(t, time.Minute, "mapperd restarted by run", func() bool {
			rep, _ := statusJSON(t, e)
			now = roleOf(t, rep, "mapperd")
			return now.State == "running" && now.PID != old && now.Restarts == restarts
		})
		return now.PID
	}
	pid := killAndWaitRestart(old, 1)
	log := p.out.String()
	for _, want := range []string{
		fmt.Sprintf("mapperd: pid %d killed by signal KILL; restart 1 of at most 3 within 10m0s, in 100ms", old),
		fmt.Sprintf("mapperd: restarted (pid %d), restart 1 since run started", pid),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("run's log lacks %q:\n%s", want, log)
		}
	}
	testutil.WaitFor(t, time.Minute, "STATUS= saying every role runs again", func() bool {
		ls := n.lines()
		return len(ls) > 0 && ls[len(ls)-1] == fmt.Sprintf("STATUS=%d of %d roles running", len(e.Cfg.Roles), len(e.Cfg.Roles))
	})
	if !n.has("STATUS=4 of 5 roles running; restarting mapperd") {
		t.Errorf("no STATUS= line for the restart: %q", n.lines())
	}

	// Again and again: restarts 2 and 3, then the 4th crash within the
	// window marks it failed.
	pid = killAndWaitRestart(pid, 2)
	pid = killAndWaitRestart(pid, 3)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "mapperd marked failed", func() bool {
		rep, _ := statusJSON(t, e)
		return roleOf(t, rep, "mapperd").Failed
	})
	rep, ok = statusJSON(t, e)
	m := roleOf(t, rep, "mapperd")
	if ok || m.State != "failed" || m.PID != 0 || m.Crashes != 4 || m.Restarts != 3 || m.LastExit != fmt.Sprintf("pid %d killed by signal KILL", pid) {
		t.Errorf("status --json of the failed role: exit 0=%v %+v", ok, m)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), "mapperd failed: it crashed more than 3 times") {
		t.Errorf("problems: %q", rep.Problems)
	}
	out, err := e.Run("archipelago", "status")
	if err == nil || !regexp.MustCompile(`(?m)^mapperd +mapperd +- +502\.\.502 +failed `).MatchString(out) {
		t.Errorf("status with mapperd failed: %v\n%s", err, out)
	}
	if !strings.Contains(p.out.String(), "4 crashes within 10m0s: FAILED, not restarting it") {
		t.Errorf("run's log does not say mapperd failed:\n%s", p.out)
	}
	if !n.has("STATUS=4 of 5 roles running; failed (crashed too often) mapperd") {
		t.Errorf("no STATUS= line for the failure: %q", n.lines())
	}

	// archipelago restart of the failed role: run supervises it again.
	e.Must("archipelago", "restart", "mapperd")
	testutil.WaitFor(t, time.Minute, "status exit 0 with mapperd back", func() bool { _, ok := statusJSON(t, e); return ok })
	pid = roleOf(t, func() supervisor.Report { r, _ := statusJSON(t, e); return r }(), "mapperd").PID
	testutil.WaitFor(t, time.Minute, "run to adopt the restarted mapperd", func() bool {
		return strings.Contains(p.out.String(), fmt.Sprintf("mapperd: runs again (pid %d)", pid))
	})

	// A role stopped with archipelago stop stays stopped.
	nbdPid := roleOf(t, func() supervisor.Report { r, _ := statusJSON(t, e); return r }(), "nbd").PID
	e.Must("archipelago", "stop", "nbd")
	testutil.WaitFor(t, time.Minute, "run to see nbd stopped on purpose", func() bool {
		return strings.Contains(p.out.String(), fmt.Sprintf("nbd: stopped by archipelago stop (pid %d); not restarting it", nbdPid))
	})
	rep, ok = statusJSON(t, e)
	if nb := roleOf(t, rep, "nbd"); ok || nb.State != "stopped" || nb.Restarts != 0 {
		t.Errorf("nbd after archipelago stop nbd: exit 0=%v %+v", ok, nb)
	}

	// SIGTERM: every peer stops, run exits 0.
	rep, _ = statusJSON(t, e)
	var pids []int
	for _, r := range rep.Roles {
		if r.PID != 0 {
			pids = append(pids, r.PID)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, "archipelago run to exit after SIGTERM", p.exited)
	if p.err != nil {
		t.Fatalf("archipelago run after SIGTERM: %v\n%s", p.err, p.out)
	}
	for _, pid := range pids {
		if xseg.ProcessAlive(pid) {
			t.Errorf("pid %d still runs after run exited", pid)
		}
	}
	rep, ok = statusJSON(t, e)
	if ok || rep.Segment.Running || rep.Supervisor != nil {
		t.Errorf("after SIGTERM: exit 0=%v segment %+v supervisor %+v", ok, rep.Segment, rep.Supervisor)
	}
	for _, r := range rep.Roles {
		if r.State != "stopped" {
			t.Errorf("after SIGTERM: %+v", r)
		}
	}
	if !n.has("STOPPING=1") {
		t.Errorf("no STOPPING=1: %q", n.lines())
	}
}

// TestRunExitsOnStop: `archipelago stop` from another shell stops every
// role; run sees that they were stopped on purpose, restarts none, and
// exits 0, also with a role it had marked failed (--restart-limit 0:
// the first crash fails it).
func TestRunExitsOnStop(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	n := listenNotify(t)
	p := startRun(t, e, n, "--restart-limit", "0")
	testutil.WaitFor(t, time.Minute, "READY=1 from archipelago run", func() bool { return n.has("READY=1") || p.exited() })
	rep, _ := statusJSON(t, e)
	syscall.Kill(roleOf(t, rep, "vlmcd").PID, syscall.SIGKILL)
	testutil.WaitFor(t, time.Minute, "vlmcd marked failed", func() bool {
		rep, _ := statusJSON(t, e)
		return roleOf(t, rep, "vlmcd").Failed
	})
	e.Must("archipelago", "stop")
	testutil.WaitFor(t, 2*time.Minute, "archipelago run to exit after archipelago stop", p.exited)
	if p.err != nil {
		t.Fatalf("archipelago run after archipelago stop: %v\n%s", p.err, p.out)
	}
	out := p.out.String()
	if strings.Contains(out, "restart 1 of") || strings.Contains(out, "restarted (pid") || !strings.Contains(out, "every role was stopped by archipelago stop; exiting") {
		t.Errorf("archipelago run said:\n%s", out)
	}
	if rep, _ := statusJSON(t, e); rep.Segment.Running {
		t.Errorf("segment still there: %+v", rep.Segment)
	}
}

// TestRunStopWaitsForClients: on SIGTERM, run stops as archipelago stop
// does, which refuses while an NBD client is connected: run says so and
// retries, and stops cleanly (exit 0) once the client has gone. With a
// client that stays, it stops anyway after --stop-wait (as stop -f) and
// exits 1, saying so.
func TestRunStopWaitsForClients(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	e := e2etest.New(t, "host-a", "")
	n := listenNotify(t)
	p := startRun(t, e, n, "--stop-wait", "10m")
	testutil.WaitFor(t, time.Minute, "READY=1 from archipelago run", func() bool { return n.has("READY=1") || p.exited() })
	e.Must("vlmc", "create", "stopwait", "--size", "16M")
	q := testutil.StartQemuSession(t, e.URI("stopwait"))
	q.Must("write -P 0x5a 0 64k")
	p.cmd.Process.Signal(syscall.SIGTERM)
	testutil.WaitFor(t, time.Minute, "run to say that it waits for the NBD client", func() bool {
		return strings.Contains(p.out.String(), "1 NBD client(s) connected to nbd; use -f to stop anyway: busy; retrying for up to 10m0s, then stopping anyway") || p.exited()
	})
	if p.exited() {
		t.Fatalf("run exited with a client connected (%v):\n%s", p.err, p.out)
	}
	if rep, ok := statusJSON(t, e); !ok {
		t.Errorf("while run waits, a role stopped: %+v", rep.Roles)
	}
	q.Close()
	testutil.WaitFor(t, 2*time.Minute, "run to exit once the client has gone", p.exited)
	if p.err != nil || !strings.HasSuffix(strings.TrimSpace(p.out.String()), "run: every role stopped") {
		t.Fatalf("run after the client went: %v\n%s", p.err, p.out)
	}

	// A client that stays: stopped anyway after --stop-wait, exit 1.
	p = startRun(t, e, nil, "--stop-wait", "1s")
	testutil.WaitFor(t, time.Minute, "every role running", func() bool { _, ok := statusJSON(t, e); return ok || p.exited() })
	q = testutil.StartQemuSession(t, e.URI("stopwait"))
	q.Must("read -P 0x5a 0 64k")
	p.cmd.Process.Signal(syscall.SIGTERM)
	testutil.WaitFor(t, 2*time.Minute, "run to exit", p.exited)
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(p.out.String(), "run: stopped by force after 1s: refusing to stop: 1 NBD client(s) connected to nbd") {
		t.Errorf("run with a client that stays: %v\n%s", p.err, p.out)
	}
	if rep, _ := statusJSON(t, e); rep.Segment.Running {
		t.Errorf("after a forced stop: %+v", rep)
	}
}
