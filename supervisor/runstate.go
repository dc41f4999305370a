package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/config"
)

// What archipelago run leaves in RUN_DIR for the other commands:
//
//   - archipelago-run.lock: run holds an flock on it for its whole life and
//     writes its pid there; a second run refuses to start, and status
//     trusts archipelago-run.json only while the lock is held.
//   - archipelago-run.json: run's view of each role (RunState), rewritten
//     on every change.
//   - <role>.stopped: written by stop for each role it stops, removed by
//     start for each role it starts: a role that has one was stopped on
//     purpose, and run does not restart it.

// RunState is what archipelago run reports about its roles.
type RunState struct {
	PID   int       `json:"pid"`   // the run process
	Since time.Time `json:"since"` // when it started
	// RestartLimit restarts of one role within RestartWindowSeconds at
	// most; a crash beyond marks the role failed.
	RestartLimit         int       `json:"restart_limit"`
	RestartWindowSeconds float64   `json:"restart_window_seconds"`
	Roles                []RoleRun `json:"roles"`
}

// RoleRun is run's view of one role.
type RoleRun struct {
	Role string `json:"role"`
	// State: "running", "restarting" (dead, restart pending), "failed"
	// (crashed too often: no more restarts until archipelago start or
	// restart of the role), "stopped" (by archipelago stop).
	State    string `json:"state"`
	PID      int    `json:"pid,omitempty"`
	Restarts int    `json:"restarts"` // restarts run made since it started
	Crashes  int    `json:"crashes"`  // deaths run saw that no stop asked for
	// LastExit says how the last crash ended ("killed by signal KILL",
	// "exit status 1", or why a restart failed).
	LastExit  string    `json:"last_exit,omitempty"`
	LastCrash time.Time `json:"last_crash,omitzero"`
}

// Role states of RoleRun.
const (
	RunRunning    = "running"
	RunRestarting = "restarting"
	RunFailed     = "failed"
	RunStopped    = "stopped"
)

func (s *Supervisor) runLockPath() string { return filepath.Join(s.cfg.RunDir, "archipelago-run.lock") }
func (s *Supervisor) runStatePath() string {
	return filepath.Join(s.cfg.RunDir, "archipelago-run.json")
}

// stopMarker is the file that says role name was stopped on purpose.
func (s *Supervisor) stopMarker(name string) string {
	return filepath.Join(s.cfg.RunDir, name+".stopped")
}

// markStopped records that stop stops role r (with the pid it stops, if
// any, and who asked), before it sends the signal.
func (s *Supervisor) markStopped(r *config.Role) {
	os.WriteFile(s.stopMarker(r.Name), []byte(fmt.Sprintf("pid %d stopped by archipelago (pid %d) at %s\n",
		s.pid(r), os.Getpid(), time.Now().UTC().Format(time.RFC3339))), 0o644)
}

// stoppedOnPurpose reports whether role name has a stop marker.
func (s *Supervisor) stoppedOnPurpose(name string) bool {
	_, err := os.Stat(s.stopMarker(name))
	return err == nil
}

// lockRunner takes the lock of archipelago run; it fails (naming the
// holder) if another run holds it.
func (s *Supervisor) lockRunner() (*os.File, error) {
	if err := os.MkdirAll(s.cfg.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	path := s.runLockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "another archipelago run"
			if b, _ := os.ReadFile(path); len(strings.TrimSpace(string(b))) > 0 {
				who = "archipelago run (pid " + strings.TrimSpace(string(b)) + ")"
			}
			return nil, fmt.Errorf("%s already supervises %s (%s)", who, s.cfgName(), path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// saveRunState writes st to archipelago-run.json (a new file renamed over
// the old: readers see one or the other).
func (s *Supervisor) saveRunState(st *RunState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.runStatePath() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.runStatePath())
}

// ReadRunState returns the state of the archipelago run that supervises
// this configuration, nil if none does (no run holds its lock).
func (s *Supervisor) ReadRunState() *RunState {
	f, err := os.Open(s.runLockPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return nil // nobody holds it: no run
	}
	b, err := os.ReadFile(s.runStatePath())
	if err != nil {
		return nil
	}
	var st RunState
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return &st
}

// role returns the RoleRun of role name, nil if none.
func (st *RunState) role(name string) *RoleRun {
	if st == nil {
		return nil
	}
	for i := range st.Roles {
		if st.Roles[i].Role == name {
			return &st.Roles[i]
		}
	}
	return nil
}
