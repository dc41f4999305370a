package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// qemuFailed reports whether qemu-io's output says that a command failed
// ("write failed: Input/output error", "Pattern verification failed at
// offset ..."): a session's command has no exit status, and an older
// qemu-io exits 0 after a failed -c command.
func qemuFailed(out string) bool {
	return strings.Contains(out, "failed") || strings.Contains(out, "error")
}

// QemuIO runs one qemu-io on the raw image at uri with commands cmds
// (qemu-io -f raw uri -c cmd ...): one NBD connection for the commands,
// closed when they are done. The error (nil if every command succeeded)
// has qemu-io's output; it wraps context.DeadlineExceeded if qemu-io did
// not end within RunLimit.
func QemuIO(t testing.TB, uri string, cmds ...string) error {
	t.Helper()
	return QemuIOArgs(t, []string{"-f", "raw", uri}, cmds...)
}

// QemuIOReadOnly is QemuIO on a read-only open (-r): it takes no lock,
// and a snapshot opens only so.
func QemuIOReadOnly(t testing.TB, uri string, cmds ...string) error {
	t.Helper()
	return QemuIOArgs(t, []string{"-r", "-f", "raw", uri}, cmds...)
}

// QemuIOArgs is QemuIO with qemu-io's arguments (the image and its
// options, e.g. TLS objects) given in full.
func QemuIOArgs(t testing.TB, args []string, cmds ...string) error {
	t.Helper()
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := RunErr(t, "qemu-io", args...)
	if err == nil && qemuFailed(out) {
		err = fmt.Errorf("a command failed")
	}
	if err != nil {
		return fmt.Errorf("qemu-io %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// QemuSession is one qemu-io kept running on an image, fed one command at
// a time, as a VM keeps its disk: one NBD connection held open while the
// test does other things.
type QemuSession struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    chan string // what qemu-io printed up to each prompt
	exited chan struct{}
}

const qemuPrompt = "qemu-io> "

// StartQemuSession starts qemu-io on the raw image at uri and waits for
// its first prompt (the image is open). The test's cleanup kills it if it
// still runs.
func StartQemuSession(t testing.TB, uri string) *QemuSession {
	t.Helper()
	cmd := exec.Command("qemu-io", "-f", "raw", uri)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("qemu-io %s: %v", uri, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); pw.Close(); close(exited) }()
	s := &QemuSession{t: t, cmd: cmd, in: in, out: make(chan string, 16), exited: exited}
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
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	s.next("opening " + uri)
	return s
}

// next returns what qemu-io printed up to its next prompt; it fails the
// test if qemu-io ends first or gives no prompt within RunLimit.
func (s *QemuSession) next(what string) string {
	s.t.Helper()
	select {
	case o, ok := <-s.out:
		if !ok {
			s.t.Fatalf("qemu-io ended before %s: %s", what, o)
		}
		return o
	case <-time.After(RunLimit):
		s.Kill()
		s.t.Fatalf("qemu-io %q: no answer after %v (waiting for a lock nobody gives back?)", what, RunLimit)
	}
	return ""
}

// Do runs one command and returns what it printed, failed or not.
func (s *QemuSession) Do(command string) string {
	s.t.Helper()
	if _, err := io.WriteString(s.in, command+"\n"); err != nil {
		s.t.Fatalf("qemu-io %q: %v", command, err)
	}
	return s.next(command)
}

// Must runs one command that must succeed, and returns what it printed.
func (s *QemuSession) Must(command string) string {
	s.t.Helper()
	o := s.Do(command)
	if qemuFailed(o) {
		s.t.Fatalf("qemu-io %q: %s", command, o)
	}
	return o
}

// Close ends the session as a VM shuts down: qemu-io reads the end of its
// input, closes the image (its NBD connection) and exits; Close waits for
// that, at most RunLimit.
func (s *QemuSession) Close() {
	s.t.Helper()
	s.in.Close()
	limit := time.After(RunLimit)
	for out := s.out; ; {
		select {
		case _, ok := <-out: // what it printed last: nobody asked
			if !ok {
				out = nil
			}
		case <-s.exited:
			return
		case <-limit:
			s.Kill()
			s.t.Fatalf("qemu-io did not exit within %v of the end of its input", RunLimit)
		}
	}
}

// Kill ends the session as a VM dies: qemu-io is killed, its connection
// dropped without a goodbye.
func (s *QemuSession) Kill() {
	s.cmd.Process.Kill()
	s.in.Close()
}
