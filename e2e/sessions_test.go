package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
)

// hang bounds a wait that must end; the bugs these tests catch made it
// last forever (a write waiting for a lock nobody gives back).
const hang = 60 * time.Second

func lockOwnerOf(t *testing.T, e *e2etest.Env, vol string) string {
	t.Helper()
	var vi volclient.Info
	if err := json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", vol)), &vi); err != nil {
		t.Fatal(err)
	}
	return vi.LockOwner
}

// mustEnd runs qemu-io and fails the test if it fails or does not end
// (within testutil.RunLimit).
func mustEnd(t *testing.T, what, uri string, cmds ...string) {
	t.Helper()
	if err := testutil.QemuIO(t, uri, cmds...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func clientsOf(t *testing.T, e *e2etest.Env) string {
	t.Helper()
	r := e.Cfg.RolesOfType(config.TypeNBDEndpoint)[0]
	b, _ := os.ReadFile(filepath.Join(e.Cfg.RunDir, r.Name+".clients"))
	return strings.TrimSpace(string(b))
}

// Sessions: what NBD connections do to the volume's lock and name, with
// two hosts on one shared directory and real clients.
func TestSessionsTwoHosts(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdinfo")
	// B's endpoint dies alone: in its own program in every layout.
	a, b := e2etest.TwoHosts(t, e2etest.Options{NotHosted: []string{"nbd"}})
	a.Start()
	b.Start()
	// A client's exit and its session's end are not simultaneous: nbdd
	// ends the session once it sees the connection close.
	unlocked := func(t *testing.T, vol, what string) {
		t.Helper()
		testutil.WaitFor(t, hang, what, func() bool { return lockOwnerOf(t, a, vol) == "" })
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
		testutil.Run(t, "nbdinfo", b.URI(vol))
		if err := testutil.QemuIOReadOnly(t, b.URI(vol), "read -P 0 0 1M"); err != nil {
			t.Fatal(err)
		}
		if o := lockOwnerOf(t, a, vol); o != "" {
			t.Fatalf("after B's reads the volume is locked by %q", o)
		}
		mustEnd(t, "A's write", a.URI(vol), "write -P 1 0 1M")
	})

	t.Run("the last writer gives the lock back", func(t *testing.T) {
		const vol = "written-disk"
		create(t, vol)
		mustEnd(t, "A's write", a.URI(vol), "write -P 1 0 1M")
		unlocked(t, vol, "A's lock to go with its client")
		mustEnd(t, "B's write", b.URI(vol), "write -P 2 1M 1M")
		unlocked(t, vol, "B's lock to go with its client")
		// Two connections on B: the lock goes with the second.
		q := testutil.StartQemuSession(t, b.URI(vol))
		if out := q.Do("write -P 3 2M 4k"); !strings.Contains(out, "wrote") {
			t.Fatalf("B's write: %s", out)
		}
		mustEnd(t, "B's second client", b.URI(vol), "write -P 4 3M 4k")
		if o := lockOwnerOf(t, a, vol); o != "host-b" {
			t.Fatalf("with B's first client connected the lock is held by %q, want host-b", o)
		}
		q.Do("flush")
		q.Kill()
		unlocked(t, vol, "B's lock to go with its last client")
		mustEnd(t, "A reads what B wrote", a.URI(vol),
			"read -P 1 0 1M", "read -P 2 1M 1M", "read -P 3 2M 4k", "read -P 4 3M 4k", "write -P 5 4M 4k")
	})

	t.Run("a killed endpoint's sessions end", func(t *testing.T) {
		const vol = "killed-endpoint-disk"
		create(t, vol)
		q := testutil.StartQemuSession(t, b.URI(vol))
		if out := q.Do("write -P 6 5M 4k"); !strings.Contains(out, "wrote") {
			t.Fatalf("B's write: %s", out)
		}
		if o := lockOwnerOf(t, a, vol); o != "host-b" {
			t.Fatalf("lock held by %q, want host-b", o)
		}
		pid := atoi(strings.TrimSpace(readFile(t, b.Cfg.PidFile(b.Cfg.RolesOfType(config.TypeNBDEndpoint)[0].Name))))
		syscall.Kill(pid, syscall.SIGKILL)
		defer b.Must("archipelago", "start")
		testutil.WaitFor(t, 10*time.Second, "nbdd to die", func() bool { return !xseg.ProcessAlive(pid) })
		q.Kill()
		mustEnd(t, "A's write after B's nbdd died", a.URI(vol), "write -P 7 6M 4k", "read -P 6 5M 4k")
	})

	t.Run("a waiting write whose client left stops counting", func(t *testing.T) {
		const vol = "waited-for-disk"
		create(t, vol)
		a.Must("vlmc", "open", vol)
		cmd := exec.Command("qemu-io", "-f", "raw", b.URI(vol), "-c", "write -P 8 7M 4k")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, hang, "B's write to wait for A's lock", func() bool { return inFlight(t, b, "mapperd") > 0 })
		testutil.WaitFor(t, hang, "B to count its client", func() bool { return clientsOf(t, b) == "1" })
		cmd.Process.Kill()
		cmd.Wait()
		testutil.WaitFor(t, hang, "B's client count to drop", func() bool { return clientsOf(t, b) == "0" })
		b.Must("archipelago", "stop") // counts connected clients
		b.Must("archipelago", "start")
		if o := lockOwnerOf(t, a, vol); o != "host-a" {
			t.Fatalf("lock held by %q, want host-a", o)
		}
		a.Must("vlmc", "close", vol)
		mustEnd(t, "A reads", a.URI(vol), "read -P 0 7M 4k")
	})

	t.Run("a volume in use is not removed", func(t *testing.T) {
		const v2 = "attached-disk"
		a.Must("vlmc", "create", v2, "--size", "16M")
		q := testutil.StartQemuSession(t, a.URI(v2))
		if out := q.Do("write -P 9 0 4k"); !strings.Contains(out, "wrote") {
			t.Fatalf("write: %s", out)
		}
		fails(t, a, []string{"remove", v2}, `volume "`+v2+`" is in use by 1 connection`)
		fails(t, a, []string{"rename", v2, v2 + "-new"}, "in use by 1 connection")
		a.Must("vlmc", "remove", "-f", v2)
		a.Must("vlmc", "create", v2, "--size", "16M")
		for _, c := range []string{"write -P 10 4k 4k", "read -P 9 0 4k", "read -P 0 0 4k"} {
			if out := q.Do(c); !strings.Contains(out, "Input/output error") {
				t.Fatalf("old connection, %q on the new volume: want an I/O error, got: %s", c, out)
			}
		}
		q.Kill()
		mustEnd(t, "the new volume is untouched", a.URI(v2), "read -P 0 0 8k")

		// The same from another host, which cannot know the connection.
		qb := testutil.StartQemuSession(t, b.URI(v2))
		if out := qb.Do("read -P 0 0 4k"); !strings.Contains(out, "read 4096") {
			t.Fatalf("B's read: %s", out)
		}
		// A's clients are gone when its count says so (their sessions
		// end before).
		testutil.WaitFor(t, hang, "A's clients to leave", func() bool { return clientsOf(t, a) == "0" })
		a.Must("vlmc", "remove", v2)
		a.Must("vlmc", "create", v2, "--size", "16M")
		mustEnd(t, "a write on A", a.URI(v2), "write -P 11 0 4k")
		for _, c := range []string{"read -P 11 0 4k", "write -P 12 0 4k"} {
			if out := qb.Do(c); !strings.Contains(out, "Input/output error") {
				t.Fatalf("B's old connection, %q on the new volume: want an I/O error, got: %s", c, out)
			}
		}
		qb.Kill()
		mustEnd(t, "A's data is intact", a.URI(v2), "read -P 11 0 4k")
	})

	t.Run("close of a missing volume", func(t *testing.T) {
		fails(t, a, []string{"close", "never-created"}, "not found")
	})
}

// inFlight is the number of requests role is serving, from `archipelago
// status`.
func inFlight(t *testing.T, e *e2etest.Env, role string) int {
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
	testutil.Run(t, "dd", "if=/dev/urandom", "of="+dev, "bs=1M", "count=1", "oflag=direct", "conv=fsync", "status=none")
	if o := lockOwnerOf(t, e, vol); o != "host-a" {
		t.Fatalf("after a write through the device the lock is held by %q, want host-a", o)
	}
	fails(t, e, []string{"remove", vol}, `volume "`+vol+`" is in use by 1 connection`)
	e.Must("vlmc", "unmap", dev)
	testutil.WaitFor(t, hang, "the lock to go with the mapping", func() bool { return lockOwnerOf(t, e, vol) == "" })
	e.Must("vlmc", "remove", vol)
}
