package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// stop is Stop under the run lock.
func (s *Supervisor) stop(ctx context.Context, out io.Writer, force bool, names []string) error {
	roles, err := s.roles(names)
	if err != nil {
		return err
	}
	if err := s.stopsWhole(roles); err != nil {
		return err
	}
	if !force {
		// No new client between the count and the stop: the endpoints'
		// sockets are moved aside first (a connect then fails at once),
		// and back when the endpoint still runs at the end.
		defer s.holdSockets()()
		if why := s.busy(ctx); len(why) > 0 {
			return fmt.Errorf("refusing to stop: %s; use -f to stop anyway: %w", strings.Join(why, ", "), errs.ErrBusy)
		}
	}
	// The pid of each role before any stops: a host's roles remove their
	// pidfiles as it stops.
	pids := map[*config.Role]int{}
	for _, r := range roles {
		pids[r] = s.pid(r)
	}
	stopped := map[int]bool{} // the processes stopped so far
	for i := len(roles) - 1; i >= 0; i-- {
		r := roles[i]
		pi := s.proc(r)
		if pid := pids[r]; pid != 0 && stopped[pid] {
			pi.PID = pid
			// Hosted with a role stopped before it: gone with it.
			s.markStopped(r)
			s.removeStale(r)
			fmt.Fprintf(out, "%s: stopped (pid %d, hosted in %s)\n", r.Name, pi.PID, config.HostProgram)
			continue
		}
		// Stopped on purpose: archipelago run does not restart it, nor
		// the roles hosted with it (stopsWhole: all of them are in
		// roles), marked before the one signal that stops them all.
		s.markStopped(r)
		if pi.PID != 0 {
			for _, o := range roles {
				if o != r && pids[o] == pi.PID {
					s.markStopped(o)
				}
			}
		}
		if pi.Running() && pi.PID == 0 {
			// Locked, pid not written yet: a peer starting.
			deadline := time.Now().Add(pidSettle)
			for pi.Running() && pi.PID == 0 && time.Now().Before(deadline) {
				if err := pause(ctx, 10*time.Millisecond); err != nil {
					return fmt.Errorf("%s: waiting for its pid in %s: %w", r.Name, s.cfg.PidFile(r.Name), err)
				}
				pi = s.proc(r)
			}
		}
		if !pi.Running() || pi.PID == 0 {
			fmt.Fprintf(out, "%s: not running\n", r.Name)
			s.removeStale(r)
			continue
		}
		host := hostedIn(pi.PID, ", ")
		if err := stopPid(ctx, pi.PID, force); err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		stopped[pi.PID] = true
		s.removeStale(r)
		fmt.Fprintf(out, "%s: stopped (pid %d%s)\n", r.Name, pi.PID, host)
	}
	// Peers no pidfile names that still map the segment, deleted or not
	// (left by a segment that was removed under them, or by a pidfile
	// that was removed).
	for _, sp := range segmentPeers(s.cfg.XSEG.Name) {
		if (len(names) > 0 && !sp.hasRole(names)) || (s.opts.StorageOnly && len(names) == 0 && slices.ContainsFunc(sp.roles, s.isEndpoint)) {
			continue
		}
		if err := stopPid(ctx, sp.pid, force); err != nil {
			return fmt.Errorf("%s, on segment %s but named by no pidfile: %w", sp.what(), s.cfg.XSEG.Name, err)
		}
		on := "on"
		if sp.deleted {
			on = "on the deleted"
		}
		fmt.Fprintf(out, "%s: stopped %s (pid %d) %s segment %s, which no pidfile named\n", sp.role(), sp.prog, sp.pid, on, s.cfg.XSEG.Name)
	}
	if len(names) == 0 && !s.opts.StorageOnly {
		if err := xseg.Destroy(s.cfg.XSEG.Name); err == nil {
			fmt.Fprintf(out, "segment %s: removed\n", s.cfg.XSEG.Name)
		}
	}
	return nil
}

// stopsWhole checks that stopping roles stops no other role: a process
// that serves one of them (archipelagod, hosting several) serves only
// roles of roles. If not, it fails (errs.ErrBusy) naming the others.
func (s *Supervisor) stopsWhole(roles []*config.Role) error {
	for _, r := range roles {
		pid := s.pid(r)
		if pid == 0 {
			continue
		}
		var with, others []string
		for i := range s.cfg.Roles {
			o := &s.cfg.Roles[i]
			if s.pid(o) != pid {
				continue
			}
			with = append(with, o.Name)
			if !slices.Contains(roles, o) {
				others = append(others, o.Name)
			}
		}
		if len(others) == 0 {
			continue
		}
		var asked []string
		for _, x := range roles {
			if slices.Contains(with, x.Name) {
				asked = append(asked, x.Name)
			}
		}
		return fmt.Errorf("refusing to stop %s alone: %s (pid %d) hosts %s with %s, which would stop too; stop them together ('archipelago stop %s'), or, to stop %s alone, take %s out of [PEERS] HOSTED of %s and restart every role (%s then runs in its own program): %w",
			strings.Join(asked, ", "), config.HostProgram, pid, strings.Join(asked, ", "), strings.Join(others, ", "),
			strings.Join(with, " "), strings.Join(asked, ", "), strings.Join(asked, ", "), s.cfgName(), strings.Join(asked, ", "), errs.ErrBusy)
	}
	return nil
}

func (s *Supervisor) isEndpoint(role string) bool {
	r, ok := s.cfg.Role(role)
	return ok && r.Type == config.TypeNBDEndpoint
}

// busy says why the peers should not stop: mapped volumes, NBD clients.
// The client count is the kernel's, read now (nbdClients), not a file the
// endpoint rewrites now and then; a count that is not zero is read again
// for up to clientsSettle, for clients that are just leaving.
func (s *Supervisor) busy(ctx context.Context) []string {
	var why []string
	if ents, err := os.ReadDir(s.cfg.MappedDir()); err == nil && len(ents) > 0 {
		why = append(why, fmt.Sprintf("%d volume(s) mapped (vlmc showmapped)", len(ents)))
	}
	for _, r := range s.cfg.RolesOfType(config.TypeNBDEndpoint) {
		if s.pid(r) == 0 {
			continue
		}
		n := s.nbdClients(r)
		for deadline := time.Now().Add(clientsSettle); n > 0 && time.Now().Before(deadline); n = s.nbdClients(r) {
			if pause(ctx, 20*time.Millisecond) != nil {
				break
			}
		}
		if n > 0 {
			why = append(why, fmt.Sprintf("%d NBD client(s) connected to %s", n, r.Name))
		}
	}
	return why
}

// holdSockets moves the Unix socket of every running block endpoint
// aside (<socket>.stopping), so that no client connects while stop counts
// and stops; connections made before are counted (nbdClients reads them by
// the address they were bound to). The function it returns puts each
// socket back if its endpoint still runs, else removes it.
func (s *Supervisor) holdSockets() func() {
	type held struct {
		r        *config.Role
		pid      int
		from, to string
	}
	var hs []held
	for _, r := range s.cfg.RolesOfType(config.TypeNBDEndpoint) {
		pid := s.pid(r)
		if pid == 0 || r.Socket == "" {
			continue
		}
		to := r.Socket + ".stopping"
		if os.Rename(r.Socket, to) == nil {
			hs = append(hs, held{r, pid, r.Socket, to})
		}
	}
	return func() {
		for _, h := range hs {
			if xseg.ProcessAlive(h.pid) {
				os.Rename(h.to, h.from)
			} else {
				os.Remove(h.to)
			}
		}
	}
}

// stopPid sends SIGTERM to pid and waits for it to go; with force it
// kills what does not stop within stopWait (15 s). A process of another
// user is an error at once.
func stopPid(ctx context.Context, pid int, force bool) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("pid %d: permission denied (%w): it belongs to another user; run this as root or as that user", pid, err)
		}
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	stopped := waitGone(ctx, pid, stopWait)
	if !stopped && force && ctx.Err() == nil {
		syscall.Kill(pid, syscall.SIGKILL)
		stopped = waitGone(ctx, pid, killWait)
	}
	if !stopped {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pid %d: sent SIGTERM, stopped waiting for it to go: %w", pid, err)
		}
		return fmt.Errorf("pid %d did not stop within 15 s (use -f to kill it): %w", pid, errs.ErrBusy)
	}
	return nil
}

// waitGone waits up to d (or until ctx ends) for pid to go, and says
// whether it went.
func waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for xseg.ProcessAlive(pid) {
		if time.Now().After(deadline) || pause(ctx, 10*time.Millisecond) != nil {
			return false
		}
	}
	return true
}
