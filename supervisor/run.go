package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
)

// RunOptions tune Run. Zero values take the defaults given.
type RunOptions struct {
	// RestartLimit is how many times one role is restarted within
	// RestartWindow at most (default 5); the crash after that marks it
	// failed: it is not restarted until archipelago start or restart of
	// that role. Negative: never restart.
	RestartLimit  int
	RestartWindow time.Duration // default 60 s
	// Restarts wait FirstDelay (default 100 ms), doubling with each crash
	// within RestartWindow, up to MaxDelay (default 10 s).
	FirstDelay, MaxDelay time.Duration
	// StopWait is how long a stop asked by ctx waits for mapped volumes
	// and NBD clients to go before it stops the peers anyway (default
	// 30 s). Negative: stop at once, as archipelago stop -f.
	StopWait time.Duration
	// Notifier gets READY=1, STATUS= and STOPPING=1 (nil: none).
	Notifier *Notifier
}

func (o *RunOptions) defaults() {
	if o.RestartLimit == 0 {
		o.RestartLimit = 5
	}
	if o.RestartLimit < 0 {
		o.RestartLimit = 0
	}
	if o.RestartWindow <= 0 {
		o.RestartWindow = time.Minute
	}
	if o.FirstDelay <= 0 {
		o.FirstDelay = 100 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 10 * time.Second
	}
	if o.StopWait == 0 {
		o.StopWait = 30 * time.Second
	}
}

// watched is Run's view of one role.
type watched struct {
	r       *config.Role
	RoleRun             // what status shows
	child   *child      // the peer, if this process started it
	crashes []time.Time // within the restart window
	due     time.Time   // when a pending restart is due
}

// poll is how often Run reads the pidfiles (a child's death wakes it at
// once).
const poll = 100 * time.Millisecond

// Run is archipelago run: it starts the roles as Start does, then
// supervises them in the foreground until ctx ends or every role has been
// stopped by archipelago stop (then it returns nil).
//
// A role whose peer dies without a stop asking for it (no <role>.stopped
// marker, see runstate.go) is restarted after a back-off (FirstDelay,
// doubling up to MaxDelay); each death and restart is written to out
// with the pid, how it ended (exit status or signal; unknown for a peer
// that another process started) and the attempt. A role that crashes
// more than RestartLimit times within RestartWindow is marked failed and
// left down; archipelago status shows it and fails. archipelago stop,
// start and restart keep working beside Run: they take the run lock as
// always, Run takes it for each restart, a role stopped by them is left
// stopped, and one started by them is watched again (a failed role
// started again gets a fresh count).
//
// When ctx ends (SIGTERM), Run stops every role as archipelago stop does;
// while volumes are mapped or NBD clients connected it retries for up to
// StopWait, then stops anyway (as stop -f) and returns an error that says
// so. Only one Run per configuration: a second one fails.
func (s *Supervisor) Run(ctx context.Context, out io.Writer, o RunOptions) error {
	o.defaults()
	lock, err := s.lockRunner()
	if err != nil {
		return fmt.Errorf("%w: %w", err, errs.ErrBusy)
	}
	defer func() {
		os.Remove(s.runStatePath())
		lock.Truncate(0)
		lock.Close()
	}()
	roles, err := s.roles(nil)
	if err != nil {
		return err
	}
	st := &RunState{PID: os.Getpid(), Since: time.Now().UTC().Truncate(time.Second),
		RestartLimit: o.RestartLimit, RestartWindowSeconds: o.RestartWindow.Seconds()}
	ws := make([]*watched, len(roles))
	for i, r := range roles {
		ws[i] = &watched{r: r, RoleRun: RoleRun{Role: r.Name, State: RunRunning}}
	}
	wake := make(chan struct{}, 1)
	children := map[string]*child{}
	s.launched = func(r *config.Role, c *child) {
		children[r.Name] = c
		go func() {
			<-c.done
			select {
			case wake <- struct{}{}:
			default:
			}
		}()
	}
	defer func() { s.launched = nil }()
	save := func() {
		st.Roles = st.Roles[:0]
		for _, w := range ws {
			st.Roles = append(st.Roles, w.RoleRun)
		}
		if err := s.saveRunState(st); err != nil {
			fmt.Fprintf(out, "run: cannot save its state for archipelago status: %v\n", err)
		}
	}
	notify := func(lines ...string) {
		if err := o.Notifier.Notify(lines...); err != nil {
			fmt.Fprintf(out, "run: %v\n", err)
		}
	}
	status := func() string {
		up, failed, restarting := 0, []string{}, []string{}
		for _, w := range ws {
			switch w.State {
			case RunRunning:
				up++
			case RunFailed:
				failed = append(failed, w.Role)
			case RunRestarting:
				restarting = append(restarting, w.Role)
			}
		}
		msg := fmt.Sprintf("%d of %d roles running", up, len(ws))
		if len(restarting) > 0 {
			msg += "; restarting " + strings.Join(restarting, ", ")
		}
		if len(failed) > 0 {
			msg += "; failed (crashed too often) " + strings.Join(failed, ", ")
		}
		return "STATUS=" + msg
	}

	notify("STATUS=starting " + strings.Join(roleNames(roles), " "))
	unlock, err := s.runLock(ctx, out, "run")
	if err == nil {
		err = s.start(ctx, out, nil)
		unlock()
	}
	if err != nil {
		if ctx.Err() != nil {
			return s.shutdown(out, o, notify, fmt.Errorf("run: stopped while starting: %w", err))
		}
		return fmt.Errorf("run: %w", err)
	}
	for _, w := range ws {
		w.PID = s.pid(w.r)
		if c := children[w.Role]; c != nil && c.pid == w.PID {
			w.child = c
		}
	}
	save()
	fmt.Fprintf(out, "run: every role runs (%s); supervising (pid %d)\n", strings.Join(roleNames(roles), ", "), os.Getpid())
	notify("READY=1", status())

	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.shutdown(out, o, notify, nil)
		case <-wake:
		case <-tick.C:
		}
		changed := false
		for _, w := range ws {
			if ctx.Err() != nil {
				break
			}
			if s.check(ctx, out, o, w, ws, children) {
				changed = true
			}
		}
		if !changed {
			continue
		}
		save()
		notify(status())
		allStopped := true
		for _, w := range ws {
			allStopped = allStopped && w.State == RunStopped
		}
		if allStopped {
			fmt.Fprintf(out, "run: every role was stopped by archipelago stop; exiting\n")
			return nil
		}
	}
}

// check looks at one role and acts: it adopts a peer started by someone
// else, notices a death (stopped on purpose, or a crash: restart
// pending, or failed), and makes a pending restart that is due. It
// reports whether w changed.
func (s *Supervisor) check(ctx context.Context, out io.Writer, o RunOptions, w *watched, ws []*watched, children map[string]*child) bool {
	pi := s.proc(w.r)
	if pi.Running() && pi.PID != 0 {
		if w.State == RunRunning && pi.PID == w.PID {
			return false
		}
		// Started again by archipelago start/restart (or by a restart
		// of ours that check already counted): watch it.
		if w.State != RunRunning {
			fmt.Fprintf(out, "%s: runs again (pid %d), started by archipelago start; supervising it\n", w.Role, pi.PID)
		}
		if w.State == RunFailed || w.State == RunStopped {
			w.crashes = nil
		}
		w.State, w.PID, w.child = RunRunning, pi.PID, nil
		if c := children[w.Role]; c != nil && c.pid == pi.PID {
			w.child = c
		}
		return true
	}
	if pi.Running() {
		return false // locked, pid not written yet: someone starts it
	}
	switch w.State {
	case RunStopped:
		return false
	case RunFailed, RunRestarting:
		if s.stoppedOnPurpose(w.Role) {
			// archipelago stop stopped it while it was down.
			fmt.Fprintf(out, "%s: stopped by archipelago stop while %s; not restarting it\n", w.Role, w.State)
			w.State = RunStopped
			return true
		}
		if w.State == RunFailed || time.Now().Before(w.due) {
			return false
		}
		// A hosted role restarts with every other hosted role that
		// waits for its restart: one archipelagod for them all (they
		// died together, with their host).
		group := []*watched{w}
		if w.r.Hosted {
			for _, x := range ws {
				if x != w && x.r.Hosted && x.State == RunRestarting {
					group = append(group, x)
				}
			}
		}
		return s.restart(ctx, out, o, group, children)
	}
	// It was running and is gone. Decide under the run lock, so that a
	// stop that is stopping it has finished (and left its marker).
	unlock, err := s.runLock(ctx, io.Discard, "run")
	if err != nil {
		return false // ctx ended
	}
	defer unlock()
	if pi := s.proc(w.r); pi.Running() {
		return false // restarted meanwhile: adopted on the next look
	}
	if s.stoppedOnPurpose(w.Role) {
		fmt.Fprintf(out, "%s: stopped by archipelago stop (pid %d); not restarting it\n", w.Role, w.PID)
		w.State, w.PID, w.child = RunStopped, 0, nil
		return true
	}
	s.removeStale(w.r)
	s.crashed(out, o, w, fmt.Sprintf("pid %d %s", w.PID, exitOf(w.child)))
	return true
}

// crashed counts a crash of w (how: what ended it) and either schedules a
// restart after the back-off or marks the role failed.
func (s *Supervisor) crashed(out io.Writer, o RunOptions, w *watched, how string) {
	now := time.Now()
	w.Crashes++
	w.LastExit, w.LastCrash = how, now.UTC().Truncate(time.Millisecond)
	kept := w.crashes[:0]
	for _, t := range w.crashes {
		if now.Sub(t) < o.RestartWindow {
			kept = append(kept, t)
		}
	}
	w.crashes = append(kept, now)
	n := len(w.crashes)
	w.PID, w.child = 0, nil
	if n > o.RestartLimit {
		w.State = RunFailed
		fmt.Fprintf(out, "%s: %s; %d crashes within %v: FAILED, not restarting it (see %s; 'archipelago restart %s' tries again)\n",
			w.Role, how, n, o.RestartWindow, s.cfg.LogFile(w.Role), w.Role)
		return
	}
	delay := o.FirstDelay
	for i := 1; i < n && delay < o.MaxDelay; i++ {
		delay *= 2
	}
	delay = min(delay, o.MaxDelay)
	w.State, w.due = RunRestarting, now.Add(delay)
	fmt.Fprintf(out, "%s: %s; restart %d of at most %d within %v, in %v\n",
		w.Role, how, n, o.RestartLimit, o.RestartWindow, delay)
}

// restart starts the roles of group again, in one start (hosted roles:
// in one archipelagod), under the run lock, unless a stop asked for one
// to stay down meanwhile. A failed start counts as a crash of each.
func (s *Supervisor) restart(ctx context.Context, out io.Writer, o RunOptions, group []*watched, children map[string]*child) bool {
	unlock, err := s.runLock(ctx, io.Discard, "run")
	if err != nil {
		return false
	}
	defer unlock()
	var todo []*watched
	var names []string
	for _, w := range group {
		if s.stoppedOnPurpose(w.Role) {
			fmt.Fprintf(out, "%s: stopped by archipelago stop; restart cancelled\n", w.Role)
			w.State = RunStopped
			continue
		}
		todo = append(todo, w)
		names = append(names, w.Role)
	}
	if len(todo) == 0 {
		return true
	}
	if err := s.start(ctx, out, names); err != nil {
		if ctx.Err() != nil {
			return false
		}
		for _, w := range todo {
			s.crashed(out, o, w, "restart failed: "+strings.ReplaceAll(err.Error(), "\n", " | "))
		}
		return true
	}
	for _, w := range todo {
		w.Restarts++
		w.State, w.PID, w.child = RunRunning, s.pid(w.r), nil
		if c := children[w.Role]; c != nil && c.pid == w.PID {
			w.child = c
		}
		fmt.Fprintf(out, "%s: restarted (pid %d%s), restart %d since run started\n", w.Role, w.PID, hostedIn(w.PID, ", "), w.Restarts)
	}
	return true
}

// shutdown stops every role when ctx has ended: as archipelago stop,
// retried while it refuses (mapped volumes, NBD clients) for up to
// StopWait, then forced. why, if set, is returned (wrapped) whatever
// happens.
func (s *Supervisor) shutdown(out io.Writer, o RunOptions, notify func(...string), why error) error {
	notify("STOPPING=1", "STATUS=stopping every role")
	fmt.Fprintf(out, "run: stopping every role\n")
	ctx := context.Background()
	deadline := time.Now().Add(o.StopWait)
	said := false
	var err error
	for {
		err = s.Stop(ctx, out, o.StopWait < 0)
		if err == nil || o.StopWait < 0 || time.Now().After(deadline) {
			break
		}
		if !said {
			fmt.Fprintf(out, "run: %v; retrying for up to %v, then stopping anyway\n", err, o.StopWait)
			said = true
		}
		time.Sleep(time.Second)
	}
	if err != nil && o.StopWait >= 0 {
		fmt.Fprintf(out, "run: %v; stopping anyway after %v (as archipelago stop -f)\n", err, o.StopWait)
		if ferr := s.Stop(ctx, out, true); ferr != nil {
			return errors.Join(why, fmt.Errorf("run: stop -f: %w", ferr))
		}
		return errors.Join(why, fmt.Errorf("run: stopped by force after %v: %w", o.StopWait, err))
	}
	if err != nil {
		return errors.Join(why, fmt.Errorf("run: stop: %w", err))
	}
	fmt.Fprintf(out, "run: every role stopped\n")
	return why
}

// exitOf says how a child ended ("killed by signal KILL", "exit status
// 1"); "ended (exit status unknown: not started by this run)" for a peer
// another process started.
func exitOf(c *child) string {
	if c == nil {
		return "ended (exit status unknown: not started by this run)"
	}
	select {
	case <-c.done:
	case <-time.After(time.Second):
		return "ended (exit status not known yet)"
	}
	var ee *exec.ExitError
	if c.err == nil {
		return "exited with status 0"
	}
	if errors.As(c.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				return "killed by signal " + strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
			}
			return fmt.Sprintf("exited with status %d", ws.ExitStatus())
		}
	}
	return "ended: " + c.err.Error()
}

// roleNames lists the names of roles.
func roleNames(roles []*config.Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = r.Name
	}
	return out
}
