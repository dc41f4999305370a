package cli_test

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/clitest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/xseg"
)

// hang bounds a wait that must end; the bugs these tests catch made it
// last forever (a write waiting for a lock nobody gives back).
const hang = 60 * time.Second

func lockOwnerOf(t *testing.T, e *clitest.Env, vol string) string {
	t.Helper()
	var vi cli.VolumeJSON
	if err := json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", vol)), &vi); err != nil {
		t.Fatal(err)
	}
	return vi.LockOwner
}

// mustEnd runs qemu-io and fails the test if it does not end within hang.
func mustEnd(t *testing.T, what, uri string, cmds ...string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- qemuIO(t, uri, cmds...) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(hang):
		t.Fatalf("%s: still waiting after %v (for a lock nobody gives back?)", what, hang)
	}
}

// qemuShell is an interactive qemu-io: one NBD connection kept open while
// the test does other things, and commands sent one at a time.
type qemuShell struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startQemuShell(t *testing.T, uri string) *qemuShell {
	t.Helper()
	cmd := exec.Command("qemu-io", "-f", "raw", uri)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); pw.Close() }()
	q := &qemuShell{cmd: cmd, in: in, out: bufio.NewReader(pr)}
	t.Cleanup(func() { cmd.Process.Kill() })
	if out, ok := q.prompt(); !ok {
		t.Fatalf("qemu-io %s: %s", uri, out)
	}
	return q
}

// prompt reads up to the next prompt; false if qemu-io ended.
func (q *qemuShell) prompt() (string, bool) {
	var b strings.Builder
	for {
		c, err := q.out.ReadByte()
		if err != nil {
			return b.String(), false
		}
		b.WriteByte(c)
		if strings.HasSuffix(b.String(), "qemu-io> ") {
			return strings.TrimSuffix(b.String(), "qemu-io> "), true
		}
	}
}

// do runs one command and returns what it printed.
func (q *qemuShell) do(t *testing.T, command string) string {
	t.Helper()
	if _, err := io.WriteString(q.in, command+"\n"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out string
		ok  bool
	}
	c := make(chan result, 1)
	go func() { out, ok := q.prompt(); c <- result{out, ok} }()
	select {
	case r := <-c:
		if !r.ok {
			t.Fatalf("qemu-io ended at %q: %s", command, r.out)
		}
		return r.out
	case <-time.After(hang):
		q.close()
		t.Fatalf("qemu-io %q: no answer after %v (waiting for a lock nobody gives back?)", command, hang)
	}
	return ""
}

func (q *qemuShell) close() {
	q.in.Close()
	q.cmd.Process.Kill()
}

func clientsOf(t *testing.T, e *clitest.Env) string {
	t.Helper()
	r := e.Cfg.RolesOfType(config.TypeNBDEndpoint)[0]
	b, _ := os.ReadFile(filepath.Join(e.Cfg.RunDir, r.Name+".clients"))
	return strings.TrimSpace(string(b))
}

// Sessions: what NBD connections do to the volume's lock and name, with
// two hosts on one shared directory and real clients.
func TestSessionsTwoHosts(t *testing.T) {
	for _, tool := range []string{"qemu-io", "nbdinfo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-utils libnbd-bin)", tool)
		}
	}
	shared := t.TempDir()
	o := clitest.Options{DataDir: shared + "/data", MapDir: shared + "/maps", HostID: "host-a"}
	a := clitest.NewWith(t, o)
	o.HostID = "host-b"
	b := clitest.NewWith(t, o)
	a.Start()
	b.Start()
	// A client's exit and its session's end are not simultaneous: nbdd
	// ends the session once it sees the connection close.
	unlocked := func(t *testing.T, vol, what string) {
		t.Helper()
		testbin.WaitFor(t, hang, what, func() bool { return lockOwnerOf(t, a, vol) == "" })
	}
	// Each case has a volume of its own, so that one failing leaves the
	// others' locks alone.
	create := func(t *testing.T, vol string) {
		t.Helper()
		a.Must("vlmc", "create", vol, "--size", "64M")
	}

	t.Run("a read-only look takes no lock", func(t *testing.T) {
		const vol = "looked-at-disk"
		create(t, vol)
		if out, err := exec.Command("nbdinfo", uriOf(b, vol)).CombinedOutput(); err != nil {
			t.Fatalf("nbdinfo: %v\n%s", err, out)
		}
		cmd := exec.Command("qemu-io", "-r", "-f", "raw", uriOf(b, vol), "-c", "read -P 0 0 1M")
		if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "failed") {
			t.Fatalf("qemu-io -r: %v\n%s", err, out)
		}
		if o := lockOwnerOf(t, a, vol); o != "" {
			t.Fatalf("after B's reads the volume is locked by %q", o)
		}
		mustEnd(t, "A's write", uriOf(a, vol), "write -P 1 0 1M")
	})

	t.Run("the last writer gives the lock back", func(t *testing.T) {
		const vol = "written-disk"
		create(t, vol)
		mustEnd(t, "A's write", uriOf(a, vol), "write -P 1 0 1M")
		unlocked(t, vol, "A's lock to go with its client")
		mustEnd(t, "B's write", uriOf(b, vol), "write -P 2 1M 1M")
		unlocked(t, vol, "B's lock to go with its client")
		// Two connections on B: the lock goes with the second.
		q := startQemuShell(t, uriOf(b, vol))
		if out := q.do(t, "write -P 3 2M 4k"); !strings.Contains(out, "wrote") {
			t.Fatalf("B's write: %s", out)
		}
		mustEnd(t, "B's second client", uriOf(b, vol), "write -P 4 3M 4k")
		if o := lockOwnerOf(t, a, vol); o != "host-b" {
			t.Fatalf("with B's first client connected the lock is held by %q, want host-b", o)
		}
		q.do(t, "flush")
		q.close()
		unlocked(t, vol, "B's lock to go with its last client")
		mustEnd(t, "A reads what B wrote", uriOf(a, vol),
			"read -P 1 0 1M", "read -P 2 1M 1M", "read -P 3 2M 4k", "read -P 4 3M 4k", "write -P 5 4M 4k")
	})

	t.Run("a killed endpoint's sessions end", func(t *testing.T) {
		const vol = "killed-endpoint-disk"
		create(t, vol)
		q := startQemuShell(t, uriOf(b, vol))
		if out := q.do(t, "write -P 6 5M 4k"); !strings.Contains(out, "wrote") {
			t.Fatalf("B's write: %s", out)
		}
		if o := lockOwnerOf(t, a, vol); o != "host-b" {
			t.Fatalf("lock held by %q, want host-b", o)
		}
		pid := atoi(strings.TrimSpace(readFile(t, b.Cfg.PidFile(b.Cfg.RolesOfType(config.TypeNBDEndpoint)[0].Name))))
		syscall.Kill(pid, syscall.SIGKILL)
		defer b.Must("archipelago", "start")
		testbin.WaitFor(t, 10*time.Second, "nbdd to die", func() bool { return !xseg.ProcessAlive(pid) })
		q.close()
		mustEnd(t, "A's write after B's nbdd died", uriOf(a, vol), "write -P 7 6M 4k", "read -P 6 5M 4k")
	})

	t.Run("a waiting write whose client left stops counting", func(t *testing.T) {
		const vol = "waited-for-disk"
		create(t, vol)
		a.Must("vlmc", "open", vol)
		cmd := exec.Command("qemu-io", "-f", "raw", uriOf(b, vol), "-c", "write -P 8 7M 4k")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testbin.WaitFor(t, hang, "B's write to wait for A's lock", func() bool { return inFlight(t, b, "mapperd") > 0 })
		testbin.WaitFor(t, hang, "B to count its client", func() bool { return clientsOf(t, b) == "1" })
		cmd.Process.Kill()
		cmd.Wait()
		testbin.WaitFor(t, hang, "B's client count to drop", func() bool { return clientsOf(t, b) == "0" })
		b.Must("archipelago", "stop") // counts connected clients
		b.Must("archipelago", "start")
		if o := lockOwnerOf(t, a, vol); o != "host-a" {
			t.Fatalf("lock held by %q, want host-a", o)
		}
		a.Must("vlmc", "close", vol)
		mustEnd(t, "A reads", uriOf(a, vol), "read -P 0 7M 4k")
	})

	t.Run("a volume in use is not removed", func(t *testing.T) {
		const v2 = "attached-disk"
		a.Must("vlmc", "create", v2, "--size", "16M")
		q := startQemuShell(t, uriOf(a, v2))
		if out := q.do(t, "write -P 9 0 4k"); !strings.Contains(out, "wrote") {
			t.Fatalf("write: %s", out)
		}
		fails(t, a, []string{"remove", v2}, `volume "`+v2+`" is in use by 1 connection`)
		fails(t, a, []string{"rename", v2, v2 + "-new"}, "in use by 1 connection")
		a.Must("vlmc", "remove", "-f", v2)
		a.Must("vlmc", "create", v2, "--size", "16M")
		for _, c := range []string{"write -P 10 4k 4k", "read -P 9 0 4k", "read -P 0 0 4k"} {
			if out := q.do(t, c); !strings.Contains(out, "Input/output error") {
				t.Fatalf("old connection, %q on the new volume: want an I/O error, got: %s", c, out)
			}
		}
		q.close()
		mustEnd(t, "the new volume is untouched", uriOf(a, v2), "read -P 0 0 8k")

		// The same from another host, which cannot know the connection.
		qb := startQemuShell(t, uriOf(b, v2))
		if out := qb.do(t, "read -P 0 0 4k"); !strings.Contains(out, "read 4096") {
			t.Fatalf("B's read: %s", out)
		}
		// A's clients are gone when its count says so (their sessions
		// end before).
		testbin.WaitFor(t, hang, "A's clients to leave", func() bool { return clientsOf(t, a) == "0" })
		a.Must("vlmc", "remove", v2)
		a.Must("vlmc", "create", v2, "--size", "16M")
		mustEnd(t, "a write on A", uriOf(a, v2), "write -P 11 0 4k")
		for _, c := range []string{"read -P 11 0 4k", "write -P 12 0 4k"} {
			if out := qb.do(t, c); !strings.Contains(out, "Input/output error") {
				t.Fatalf("B's old connection, %q on the new volume: want an I/O error, got: %s", c, out)
			}
		}
		qb.close()
		mustEnd(t, "A's data is intact", uriOf(a, v2), "read -P 11 0 4k")
	})

	t.Run("close of a missing volume", func(t *testing.T) {
		fails(t, a, []string{"close", "never-created"}, "not found")
	})
}

// inFlight is the number of requests role is serving, from `archipelago
// status`.
func inFlight(t *testing.T, e *clitest.Env, role string) int {
	t.Helper()
	out, _ := e.Run("archipelago", "status")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 7 && f[0] == role {
			return atoi(f[5])
		}
	}
	return 0
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A mapped device is a session too: its volume is in use while mapped, and
// the lock its writes took goes back when it is unmapped.
func TestSessionsMappedDevice(t *testing.T) {
	e := startMapping(t)
	const vol = "mapped-disk"
	e.Must("vlmc", "create", vol, "--size", "64M")
	dev := mapVolume(t, e, vol)
	run(t, "dd", "if=/dev/urandom", "of="+dev, "bs=1M", "count=1", "oflag=direct", "conv=fsync", "status=none")
	if o := lockOwnerOf(t, e, vol); o != "host-a" {
		t.Fatalf("after a write through the device the lock is held by %q, want host-a", o)
	}
	fails(t, e, []string{"remove", vol}, `volume "`+vol+`" is in use by 1 connection`)
	e.Must("vlmc", "unmap", dev)
	testbin.WaitFor(t, hang, "the lock to go with the mapping", func() bool { return lockOwnerOf(t, e, vol) == "" })
	e.Must("vlmc", "remove", vol)
}
