package supervisor

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// TestCrashBackoff: each crash within the window doubles the delay before
// the restart (capped), the crash after RestartLimit restarts marks the
// role failed, crashes older than the window no longer count, and each is
// logged with the role, how it ended and the attempt.
func TestCrashBackoff(t *testing.T) {
	cfg := config.Default()
	s := New(cfg, Options{})
	o := RunOptions{RestartLimit: 6, RestartWindow: time.Hour, FirstDelay: 100 * time.Millisecond, MaxDelay: time.Second}
	o.defaults()
	w := &watched{r: &cfg.Roles[0], RoleRun: RoleRun{Role: cfg.Roles[0].Name, State: RunRunning}}
	var log testutil.Buffer
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, d := range want {
		before := time.Now()
		s.crashed(&log, o, w, "pid 42 killed by signal KILL")
		if w.State != RunRestarting || w.Crashes != i+1 {
			t.Fatalf("crash %d: state %s crashes %d", i+1, w.State, w.Crashes)
		}
		if got := w.due.Sub(before); got < d*time.Millisecond || got > d*time.Millisecond+time.Since(before) {
			t.Errorf("crash %d: restart in %v, want %v", i+1, got, d*time.Millisecond)
		}
	}
	s.crashed(&log, o, w, "exited with status 1")
	if w.State != RunFailed || w.LastExit != "exited with status 1" {
		t.Errorf("crash 7 of at most 6 restarts: state %s, last exit %q", w.State, w.LastExit)
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 7 || lines[0] != cfg.Roles[0].Name+": pid 42 killed by signal KILL; restart 1 of at most 6 within 1h0m0s, in 100ms" ||
		!strings.Contains(lines[6], "exited with status 1; 7 crashes within 1h0m0s: FAILED, not restarting it") {
		t.Errorf("log:\n%s", log.String())
	}

	// Crashes older than the window are forgotten: the next one is the
	// first again.
	w.State = RunRunning
	for i := range w.crashes {
		w.crashes[i] = w.crashes[i].Add(-2 * time.Hour)
	}
	before := time.Now()
	s.crashed(io.Discard, o, w, "killed by signal SEGV")
	if w.State != RunRestarting || len(w.crashes) != 1 || w.due.Sub(before) > 100*time.Millisecond+time.Since(before) {
		t.Errorf("after the window: state %s, %d crashes counted, restart in %v", w.State, len(w.crashes), w.due.Sub(before))
	}

	// RestartLimit -1: the first crash fails the role.
	o = RunOptions{RestartLimit: -1}
	o.defaults()
	w = &watched{r: &cfg.Roles[0], RoleRun: RoleRun{Role: cfg.Roles[0].Name, State: RunRunning}}
	s.crashed(io.Discard, o, w, "killed by signal KILL")
	if w.State != RunFailed {
		t.Errorf("restart limit -1: state %s", w.State)
	}
}
