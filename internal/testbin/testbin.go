// Package testbin builds the project's programs for tests and runs them as
// real processes, so that tests exercise peers the way `archipelago start`
// runs them: separate processes, killed for real.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testutil"
)

var (
	once   sync.Once
	binDir string
	errB   error
)

// Dir builds every program under cmd/ once per test process and returns
// the directory holding them. $ARCHIPELAGO_BUILD_TAGS, if set, is passed to
// go build as -tags (e.g. "ceph" to build radosd).
func Dir(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			errB = fmt.Errorf("go env GOMOD: %v", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		// One directory per test process, named after its pid; those of
		// processes gone are removed here (a test binary has no hook to
		// remove its own at exit).
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), "archipelago-bin-*"))
		for _, d := range old {
			pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "archipelago-bin-"))
			if err != nil || syscall.Kill(pid, 0) != nil {
				os.RemoveAll(d)
			}
		}
		binDir = filepath.Join(os.TempDir(), fmt.Sprintf("archipelago-bin-%d", os.Getpid()))
		if errB = os.MkdirAll(binDir, 0o755); errB != nil {
			return
		}
		args := []string{"build", "-o", binDir + "/"}
		if tags := os.Getenv("ARCHIPELAGO_BUILD_TAGS"); tags != "" {
			args = append(args, "-tags", tags)
		}
		cmd := exec.Command("go", append(args, "./cmd/...")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			errB = fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
		}
	})
	if errB != nil {
		t.Fatal(errB)
	}
	return binDir
}

// Path returns the path of program name.
func Path(t testing.TB, name string) string { return filepath.Join(Dir(t), name) }

// Proc is a running program.
type Proc struct {
	Cmd    *exec.Cmd
	name   string
	out    *testutil.Buffer
	exited chan struct{}
	err    error
}

// Start runs program name with args. The test's cleanup kills it if it is
// still running and logs its output if the test failed.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(Path(t, name), args...), name: name, out: &testutil.Buffer{}, exited: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.out, p.out
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s %v output:\n%s", name, args, p.Output())
		}
	})
	return p
}

// Output is what the program printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Proc) Kill() {
	p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM and waits up to d for the exit; it returns the exit
// error (nil for status 0) or an error on time-out.
func (p *Proc) Stop(d time.Duration) error {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(d)
}

// Wait waits up to d for the program to exit.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s did not exit within %v", p.name, d)
	}
}

// Exited reports whether the program has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}
