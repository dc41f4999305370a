package e2e_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/xseg"
)

// hostPid checks that the roles named all run in one archipelagod and
// returns its pid.
func hostPid(t *testing.T, e *e2etest.Env, roles ...string) int {
	t.Helper()
	pids := rolePids(e)
	pid := pids[roles[0]]
	for _, r := range roles {
		if pids[r] == 0 || pids[r] != pid {
			t.Fatalf("roles %v: pidfiles name %v, want one pid for them all", roles, pids)
		}
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(exe) != config.HostProgram {
		t.Fatalf("pid %d of roles %v runs %q (%v), want %s", pid, roles, exe, err, config.HostProgram)
	}
	return pid
}

// TestHostedStartStatusStop: with every role in [PEERS] HOSTED, start
// runs one archipelagod for them all (every pidfile names it, it is the
// one process on the segment, its log is archipelagod.log); status shows
// each role hosted in it; a second start finds them running; stopping
// one hosted role alone is refused, naming the others, and stops nothing;
// stop stops the host; restart brings up a new one.
func TestHostedStartStatusStop(t *testing.T) {
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", Hosted: "all"})
	names := roleNames(e)
	out := e.Must("archipelago", "start")
	pid := hostPid(t, e, names...)
	for _, n := range names {
		if want := fmt.Sprintf("%s: started (pid %d, ", n, pid); !strings.Contains(out, want) || strings.Count(out, "hosted in archipelagod") != len(names) {
			t.Errorf("start lacks %q (and %d lines saying hosted):\n%s", want, len(names), out)
		}
	}
	if got := mappers(e.Cfg.XSEG.Name); !slices.Equal(got, []int{pid}) {
		t.Errorf("processes on the segment: %v, want only the host %d", got, pid)
	}
	if _, err := os.Stat(filepath.Join(e.Cfg.LogDir, "archipelagod.log")); err != nil {
		t.Errorf("host log: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.Cfg.LogDir, "vlmcd.log")); !os.IsNotExist(err) {
		t.Errorf("a log of vlmcd's own beside the host's: %v", err)
	}

	status := e.Must("archipelago", "status")
	for _, n := range names {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^%s +\S+ +%d +\S+ +running +\d+ +\d+ +hosted in archipelagod pid %d$`, n, pid, pid))
		if !re.MatchString(status) {
			t.Errorf("status line of %s does not say hosted in archipelagod pid %d:\n%s", n, pid, status)
		}
	}
	rep, ok := statusJSON(t, e)
	for _, r := range rep.Roles {
		if !ok || !r.Hosted || r.Program != config.HostProgram || r.PID != pid || r.State != "running" {
			t.Errorf("status --json (exit 0 %v): %+v", ok, r)
		}
	}
	if out := e.Must("archipelago", "start"); strings.Count(out, fmt.Sprintf("already running (pid %d, hosted in archipelagod)", pid)) != len(names) {
		t.Errorf("second start:\n%s", out)
	}

	// One hosted role alone: refused, nothing stops.
	out, err := e.Run("archipelago", "stop", "vlmcd")
	if err == nil || !strings.Contains(out, "refusing to stop vlmcd alone: archipelagod (pid "+fmt.Sprint(pid)+") hosts vlmcd with blockerb, blockerm, mapperd, nbd") ||
		!strings.Contains(out, "'archipelago stop blockerb blockerm mapperd vlmcd nbd'") || !strings.Contains(out, "[PEERS] HOSTED") {
		t.Errorf("stop vlmcd alone: %v\n%s", err, out)
	}
	if hostPid(t, e, names...) != pid {
		t.Fatal("the host changed")
	}
	e.Must("archipelago", "status")
	if _, err := os.Stat(e.Cfg.RunDir + "/vlmcd.stopped"); !os.IsNotExist(err) {
		t.Errorf("a refused stop left vlmcd's stop marker: %v", err)
	}

	// Restart: a new host for them all.
	e.Must("archipelago", "restart")
	if xseg.ProcessAlive(pid) {
		t.Errorf("old host %d still runs after restart", pid)
	}
	pid2 := hostPid(t, e, names...)
	if pid2 == pid {
		t.Errorf("restart kept pid %d", pid)
	}

	out = e.Must("archipelago", "stop")
	for _, n := range names {
		if !strings.Contains(out, fmt.Sprintf("%s: stopped (pid %d, hosted in archipelagod)", n, pid2)) {
			t.Errorf("stop lacks %s:\n%s", n, out)
		}
	}
	if xseg.ProcessAlive(pid2) || xseg.Exists(e.Cfg.XSEG.Name) {
		t.Errorf("after stop: host alive %v, segment there %v", xseg.ProcessAlive(pid2), xseg.Exists(e.Cfg.XSEG.Name))
	}
	rep, ok = statusJSON(t, e)
	for _, r := range rep.Roles {
		if ok || r.State != "stopped" || r.PID != 0 || r.Program != config.HostProgram {
			t.Errorf("after stop (exit 0 %v): %+v", ok, r)
		}
	}
}

func roleNames(e *e2etest.Env) []string {
	var n []string
	for _, r := range e.Cfg.Roles {
		n = append(n, r.Name)
	}
	return n
}

// TestHostedMixed: the storage roles hosted, the block endpoint in its
// own nbdd: a volume written over NBD reads back; the endpoint stops and
// starts alone; a hosted role alone may not stop.
func TestHostedMixed(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", Hosted: "blockerb blockerm mapperd vlmcd"})
	e.Start()
	pid := hostPid(t, e, "blockerb", "blockerm", "mapperd", "vlmcd")
	nbd := rolePids(e)["nbd"]
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", nbd)); nbd == pid || filepath.Base(exe) != "nbdd" {
		t.Fatalf("nbd runs as pid %d (%s), the host is %d", nbd, exe, pid)
	}
	status := e.Must("archipelago", "status")
	if !regexp.MustCompile(`(?m)^nbd +nbd_endpoint +\d+ +0\.\.15 +running +\d+ +\d+ +nbdd$`).MatchString(status) ||
		!strings.Contains(status, fmt.Sprintf("hosted in archipelagod pid %d", pid)) {
		t.Errorf("status:\n%s", status)
	}

	e.Must("vlmc", "create", "mixed", "--size", "8M")
	qemu(t, e, "mixed", "write -P 0x5a 0 1M", "write -P 0xa5 4M 512k")
	want := make([]byte, 8<<20)
	copy(want, bytes.Repeat([]byte{0x5a}, 1<<20))
	copy(want[4<<20:], bytes.Repeat([]byte{0xa5}, 512<<10))
	if got := readVol(t, e, "mixed"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}

	if out, err := e.Run("archipelago", "stop", "mapperd"); err == nil || !strings.Contains(out, "refusing to stop mapperd alone") || !strings.Contains(out, "with blockerb, blockerm, vlmcd,") {
		t.Errorf("stop mapperd alone: %v\n%s", err, out)
	}
	if out := e.Must("archipelago", "stop", "nbd"); out != fmt.Sprintf("nbd: stopped (pid %d)", nbd) {
		t.Errorf("stop nbd: %q", out)
	}
	if hostPid(t, e, "blockerb", "blockerm", "mapperd", "vlmcd") != pid {
		t.Fatal("stopping nbd changed the host")
	}
	e.Must("archipelago", "start", "nbd")
	if got := readVol(t, e, "mixed"); !bytes.Equal(got, want) {
		t.Fatalf("after nbd restarted: read back differs at %d", firstDiff(got, want))
	}
}

// TestHostedRunRestartsHost: under archipelago run, the host killed with
// SIGKILL comes back with every role it hosted, in one new archipelagod,
// and serves; SIGTERM to run stops it.
func TestHostedRunRestartsHost(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", Hosted: "all"})
	names := roleNames(e)
	n := listenNotify(t)
	p := startRun(t, e, n)
	testutil.WaitFor(t, time.Minute, "READY=1 from archipelago run", func() bool { return n.has("READY=1") || p.exited() })
	if p.exited() {
		t.Fatalf("archipelago run exited (%v):\n%s", p.err, p.out)
	}
	pid := hostPid(t, e, names...)
	e.Must("vlmc", "create", "v", "--size", "4M")
	qemu(t, e, "v", "write -P 7 0 4M")

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "every role back in a new host", func() bool {
		rep, ok := statusJSON(t, e)
		if !ok {
			return false
		}
		for _, r := range rep.Roles {
			if r.PID == pid || r.State != "running" || r.Restarts != 1 || r.Crashes != 1 {
				return false
			}
		}
		return true
	})
	pid2 := hostPid(t, e, names...)
	if got := mappers(e.Cfg.XSEG.Name); !slices.Equal(got, []int{pid2}) {
		t.Errorf("processes on the segment after the restart: %v, want only the new host %d", got, pid2)
	}
	log := p.out.String()
	for _, r := range names {
		for _, want := range []string{
			fmt.Sprintf("%s: pid %d killed by signal KILL; restart 1 of at most 5", r, pid),
			fmt.Sprintf("%s: restarted (pid %d, hosted in archipelagod), restart 1 since run started", r, pid2),
		} {
			if !strings.Contains(log, want) {
				t.Errorf("run's log lacks %q:\n%s", want, log)
			}
		}
	}
	if got := readVol(t, e, "v"); !bytes.Equal(got, bytes.Repeat([]byte{7}, 4<<20)) {
		t.Fatalf("after the restart: read back differs at %d", firstDiff(got, bytes.Repeat([]byte{7}, 4<<20)))
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, "archipelago run to exit after SIGTERM", p.exited)
	if p.err != nil || xseg.ProcessAlive(pid2) {
		t.Fatalf("archipelago run after SIGTERM: %v, host alive %v\n%s", p.err, xseg.ProcessAlive(pid2), p.out)
	}
}

// TestHostedFailedStart: a hosted role that cannot start (its TCP address
// is taken) fails the host; start says which roles did not come up and
// quotes the host's log, and removes the segment it made.
func TestHostedFailedStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", Hosted: "all", Extra: "[nbd]\nlisten = " + ln.Addr().String() + "\n"})
	out, err := e.Run("archipelago", "start")
	if err == nil || !regexp.MustCompile(`archipelagod for blockerb, blockerm, mapperd, vlmcd, nbd exited \(exit status 1\) before each of them served \(.*\); \S+/archipelagod\.log says:\n(.*\n)*.*role nbd \(nbdd\) failed to start: listen tcp .*: address already in use`).MatchString(out) ||
		!strings.Contains(out, "segment "+e.Cfg.XSEG.Name+": removed") {
		t.Errorf("start with nbd's address taken: %v\n%s", err, out)
	}
	if got := mappers(e.Cfg.XSEG.Name); len(got) != 0 {
		t.Errorf("processes left on the segment: %v", got)
	}
}
