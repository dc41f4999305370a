package cli_test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/clitest"
)

// A forced unlock while the old holder lives: host A's client (a VM, here
// one qemu-io session kept open) writes and flushes; host B breaks A's lock
// with `vlmc unlock -f`, writes and flushes; A's client goes on writing.
// A's next write fails with EIO, and so does every write after it while
// the connection lasts; both hosts read B's data, and A's late writes are
// nowhere; after both hosts restart they read the same image. The ceph build tag adds the same test
// on a RADOS pool.
func TestTwoHostsForcedUnlockFencesSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	forcedUnlockFences(t, clitest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"})
}

func forcedUnlockFences(t *testing.T, o clitest.Options) {
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io not installed (apt-get install qemu-utils)")
	}
	o.HostID = "host-a"
	a := clitest.NewWith(t, o)
	o.HostID = "host-b"
	b := clitest.NewWith(t, o)
	a.Start()
	b.Start()
	const vol = "fenced-disk"
	a.Must("vlmc", "create", vol, "--size", "64M")

	vm := startQemuIO(t, uriOf(a, vol))
	vm.must("write -P 1 0 8M")
	vm.must("flush")

	fails(t, b, []string{"unlock", vol}, "locked by host-a")
	b.Must("vlmc", "unlock", "-f", vol)
	if err := qemuIO(t, uriOf(b, vol), "write -P 2 0 1M", "write -P 2 4M 1M", "flush"); err != nil {
		t.Fatalf("B's write after the forced unlock: %v", err)
	}

	// A's client goes on: its cached mappings and its hold are stale. Its
	// next write fails (the forced unlock waited until the lease of A's
	// cached mappings ran out), and so does every write after it, also of
	// blocks A wrote before, while the connection lasts. (A failed flush
	// is not seen here: qemu-io 7 prints nothing for it.)
	const eio = "Input/output error"
	for _, c := range []string{"write -P 3 0 8M", "flush", "write -P 3 0 8M", "write -P 3 32M 1M", "flush", "write -P 3 4M 4K"} {
		o := vm.do(c)
		if strings.HasPrefix(c, "write") && !strings.Contains(o, "write failed: "+eio) {
			t.Fatalf("A's %q after the forced unlock: %q, want EIO", c, o)
		}
	}
	vm.close()
	// A's mapperd says why, at error level.
	if log, _ := os.ReadFile(a.Cfg.LogFile("mapperd")); !regexp.MustCompile(`level=ERROR .*fenced-disk.*broken by a forced unlock`).Match(log) {
		t.Errorf("A's mapperd log names no fenced request at error level:\n%s", log)
	}

	image := []string{"read -P 2 0 1M", "read -P 1 1M 3M", "read -P 2 4M 1M", "read -P 1 5M 3M", "read -P 0 8M 56M"}
	for _, h := range []*clitest.Env{a, b} {
		if err := qemuIO(t, uriOf(h, vol), image...); err != nil {
			t.Fatalf("%s after the break: %v", h.Cfg.HostID, err)
		}
	}
	for _, h := range []*clitest.Env{a, b} {
		h.Must("archipelago", "restart")
	}
	for _, h := range []*clitest.Env{a, b} {
		if err := qemuIO(t, uriOf(h, vol), image...); err != nil {
			t.Fatalf("%s after both restarted: %v", h.Cfg.HostID, err)
		}
	}
	// Once B lets go, nobody holds it: a plain unlock says so, naming the
	// volume (it was `RELEASE "fenced-disk_lock" at port 501: not found`).
	b.Must("vlmc", "close", vol)
	fails(t, a, []string{"unlock", vol}, `volume "fenced-disk" is not locked`)
}

// qemuSession is a qemu-io kept open on a volume, fed one command at a
// time, as a VM would keep its disk.
type qemuSession struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   chan string // what qemu-io printed up to each prompt
	lines []string
}

const qemuPrompt = "qemu-io> "

func startQemuIO(t *testing.T, uri string) *qemuSession {
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
	s := &qemuSession{t: t, cmd: cmd, in: in, out: make(chan string, 16)}
	go func() {
		// Split at prompts: each one ends a command's output.
		r := bufio.NewReader(pr)
		var acc strings.Builder
		for {
			b, err := r.ReadByte()
			if err != nil {
				s.out <- acc.String()
				close(s.out)
				return
			}
			acc.WriteByte(b)
			if strings.HasSuffix(acc.String(), qemuPrompt) {
				s.out <- strings.TrimSuffix(acc.String(), qemuPrompt)
				acc.Reset()
			}
		}
	}()
	t.Cleanup(func() { s.close(); pw.Close() })
	s.next("start") // the first prompt
	return s
}

func (s *qemuSession) next(what string) string {
	s.t.Helper()
	select {
	case o, ok := <-s.out:
		if !ok {
			s.t.Fatalf("qemu-io ended before %s: %s", what, o)
		}
		return o
	case <-time.After(2 * time.Minute):
		s.t.Fatalf("qemu-io: no answer to %s", what)
	}
	return ""
}

// do runs one command and returns what it printed.
func (s *qemuSession) do(c string) string {
	s.t.Helper()
	if _, err := io.WriteString(s.in, c+"\n"); err != nil {
		s.t.Fatalf("qemu-io %s: %v", c, err)
	}
	return s.next(c)
}

// must runs one command that must succeed.
func (s *qemuSession) must(c string) {
	s.t.Helper()
	if o := s.do(c); strings.Contains(o, "failed") {
		s.t.Fatalf("qemu-io %s: %s", c, o)
	}
}

func (s *qemuSession) close() {
	if s.in != nil {
		s.in.Close()
		s.in = nil
		s.cmd.Wait()
	}
}
