package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// start is Start under the run lock.
func (s *Supervisor) start(ctx context.Context, out io.Writer, names []string) error {
	roles, err := s.roles(names)
	if err != nil {
		return err
	}
	for _, d := range []string{s.cfg.RunDir, s.cfg.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if lost := s.lostSegment(); len(lost) > 0 {
		return fmt.Errorf("segment %s (%s) was removed or replaced while %s still run on the old one: starting now would run a second set of peers beside them on the same storage; run 'archipelago stop' first: %w",
			s.cfg.XSEG.Name, filepath.Join(xseg.ShmDir, s.cfg.XSEG.Name), strings.Join(lost, ", "), errs.ErrBusy)
	}
	seg, created, err := s.segment(out)
	if err != nil {
		return err
	}
	defer seg.Close()
	failed := func(err error) error {
		if created && !segmentInUse(seg) {
			if xseg.Destroy(s.cfg.XSEG.Name) == nil {
				err = fmt.Errorf("%w\nsegment %s: removed (no peer runs on it)", err, s.cfg.XSEG.Name)
			}
		}
		return err
	}
	// The hosted roles to start: those that no process serves. They
	// start together, in one archipelagod, where the first of them is.
	var hosted []*config.Role
	for _, r := range roles {
		if r.Hosted && !s.settled(ctx, r).Running() {
			hosted = append(hosted, r)
		}
	}
	for _, r := range roles {
		// The role is meant to run from now on: archipelago run restarts
		// it if it dies (see stopMarker).
		os.Remove(s.stopMarker(r.Name))
		if slices.Contains(hosted, r) {
			if r != hosted[0] {
				continue // started with the first
			}
			c, err := s.launch(ctx, seg, hosted)
			if err != nil {
				return failed(err)
			}
			for _, h := range hosted {
				if s.launched != nil {
					s.launched(h, c)
				}
				fmt.Fprintf(out, "%s: started (pid %d, ports %d..%d, hosted in %s)\n", h.Name, c.pid, h.PortStart, h.PortEnd, config.HostProgram)
			}
			continue
		}
		if pi := s.settled(ctx, r); pi.Running() {
			// Its process lives: never a second one, whatever the
			// segment says.
			if owner, alive := seg.Owner(r.PortStart); alive && owner == pi.PID {
				fmt.Fprintf(out, "%s: already running (pid %d%s)\n", r.Name, pi.PID, hostedIn(pi.PID, ", "))
				continue
			}
			if pi.PID == 0 {
				return fmt.Errorf("%s: a process holds %s and has not written its pid yet (starting?): %w", r.Name, s.cfg.PidFile(r.Name), errs.ErrBusy)
			}
			return fmt.Errorf("%s: runs as pid %d (%s) but does not own port %d of segment %s: %w",
				r.Name, pi.PID, s.cfg.PidFile(r.Name), r.PortStart, s.cfg.XSEG.Name, errs.ErrBusy)
		}
		c, err := s.launch(ctx, seg, []*config.Role{r})
		if err != nil {
			return failed(err)
		}
		if s.launched != nil {
			s.launched(r, c)
		}
		fmt.Fprintf(out, "%s: started (pid %d, ports %d..%d)\n", r.Name, c.pid, r.PortStart, r.PortEnd)
	}
	return nil
}

// hostedIn says "<sep>hosted in archipelagod" if process pid is the host
// program, else "".
func hostedIn(pid int, sep string) string {
	if pid != 0 && progOf(pid) == config.HostProgram {
		return sep + "hosted in " + config.HostProgram
	}
	return ""
}

// segment joins the configured segment, creating it if missing and
// replacing it if no live process uses it (left by a crash). created says
// that this call made it.
func (s *Supervisor) segment(out io.Writer) (seg *xseg.Segment, created bool, err error) {
	x := s.cfg.XSEG
	want := xseg.Config{Name: x.Name, SizeMiB: x.SizeMiB, Ports: x.Ports, DynPorts: x.DynPorts}
	if xseg.Exists(x.Name) {
		seg, err := xseg.Join(x.Name)
		if err == nil {
			in := seg.Info()
			live := false
			for no := 0; no < in.Ports && !live; no++ {
				_, live = seg.Owner(no)
			}
			if live {
				if in.Size != uint64(x.SizeMiB)<<20 || in.Ports != x.Ports || in.DynPorts != x.DynPorts {
					seg.Close()
					return nil, false, fmt.Errorf("segment %q is in use with %d MiB and %d ports (%d dynamic from), the configuration says %d MiB, %d ports, %d: stop every peer first",
						x.Name, in.Size>>20, in.Ports, in.DynPorts, x.SizeMiB, x.Ports, x.DynPorts)
				}
				return seg, false, nil
			}
			seg.Close()
		} else if errors.Is(err, errs.ErrVersion) {
			// Made by another version of Archipelago: its peers, if
			// any still run, are ours by their pidfiles.
			for i := range s.cfg.Roles {
				if pid := s.pid(&s.cfg.Roles[i]); pid != 0 {
					return nil, false, fmt.Errorf("%w; role %s (pid %d) of that version still runs: stop it with the archipelago that started it",
						err, s.cfg.Roles[i].Name, pid)
				}
			}
		}
		// Nobody lives on it (or it is unreadable): a crash left it.
		fmt.Fprintf(out, "segment %s: stale (no live peer), recreating\n", x.Name)
		if err := xseg.Destroy(x.Name); err != nil && !errors.Is(err, errs.ErrNotFound) {
			return nil, false, err
		}
	}
	seg, err = xseg.Create(want)
	if err != nil {
		return nil, false, err
	}
	return seg, true, nil
}

// settled reads a role's pidfile; if a lock holder is there but the file
// names no live process, it waits (up to pidSettle, or until ctx ends)
// for that to change: the holder is a peer starting (its pid not written
// yet), or one just killed (its lock goes only with its last thread,
// after its pid reads as a zombie).
func (s *Supervisor) settled(ctx context.Context, r *config.Role) peer.PidInfo {
	pi := s.proc(r)
	for deadline := time.Now().Add(pidSettle); pi.Held && pi.PID == 0 && time.Now().Before(deadline); pi = s.proc(r) {
		if pause(ctx, 10*time.Millisecond) != nil {
			break
		}
	}
	return pi
}

// segmentInUse reports whether a live process owns a port of seg.
func segmentInUse(seg *xseg.Segment) bool {
	for no := 0; no < seg.Info().Ports; no++ {
		if _, alive := seg.Owner(no); alive {
			return true
		}
	}
	return false
}

// program finds the program serving a role type: next to this program,
// else on PATH.
func program(typ string) (string, error) {
	name, ok := programs[typ]
	if !ok {
		return "", fmt.Errorf("no program serves role type %q: %w", typ, errs.ErrNotSupported)
	}
	p, err := findProgram(name)
	if err != nil {
		return "", fmt.Errorf("program %s for role type %s: %w", name, typ, err)
	}
	return p, nil
}

// findProgram finds program name next to this program, else on PATH.
func findProgram(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath(name)
}

// child is a peer this process started: its pid, and how it ended once
// it has (err is cmd.Wait's, read after done is closed).
type child struct {
	pid  int
	done chan struct{}
	err  error
}

// launch starts the program of roles, its log appended to their log:
// the role's own program for one role that is not hosted, else
// archipelagod with a --role for each (in the order given). It waits
// until every one of them has bound its first port and written its
// pidfile with the process's pid (the last thing a peer does when it
// starts: status reads it), allowing launchWait for each.
func (s *Supervisor) launch(ctx context.Context, seg *xseg.Segment, roles []*config.Role) (*child, error) {
	var bin string
	var err error
	names := roleNames(roles)
	what := strings.Join(names, ", ")
	logPath := s.cfg.LogFile(roles[0].Name)
	argv := []string{}
	if len(roles) == 1 && !roles[0].Hosted {
		bin, err = program(roles[0].Type)
		argv = append(argv, "--role", roles[0].Name)
	} else {
		if bin, err = findProgram(config.HostProgram); err != nil {
			err = fmt.Errorf("program %s for the roles of [PEERS] HOSTED (%s): %w", config.HostProgram, what, err)
		}
		logPath = s.cfg.HostLogFile()
		for _, r := range roles {
			argv = append(argv, "--role", r.Name)
		}
	}
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// What this run writes starts here: a failure quotes only that.
	var from int64
	if fi, err := logf.Stat(); err == nil {
		from = fi.Size()
	}
	if s.opts.ConfigPath != "" {
		abs, _ := filepath.Abs(s.opts.ConfigPath)
		argv = append(argv, "--config", abs)
	}
	cmd := exec.Command(bin, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	pid := cmd.Process.Pid
	c := &child{pid: pid, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	// Each role gets launchWait from the one before it (a host starts
	// them one after the other).
	deadline := time.Now().Add(launchWait)
	for i := 0; i < len(roles); {
		r := roles[i]
		if owner, alive := seg.Owner(r.PortStart); alive && owner == pid && s.pid(r) == pid {
			i++
			deadline = time.Now().Add(launchWait)
			continue
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("%s: did not bind port %d within %v (%s runs as pid %d); see %s", r.Name, r.PortStart, launchWait, filepath.Base(bin), pid, logPath)
		}
		select {
		case <-c.done:
			if len(roles) > 1 || roles[0].Hosted {
				return nil, fmt.Errorf("%s for %s exited (%v) before each of them served (its log's last lines say which failed); %s says:\n%s",
					filepath.Base(bin), what, c.err, logPath, tailFrom(logPath, from, 5))
			}
			return nil, fmt.Errorf("%s: %s exited (%v) before binding its ports; %s says:\n%s", r.Name, filepath.Base(bin), c.err, logPath, tailFrom(logPath, from, 5))
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: started as pid %d, stopped waiting for it to bind port %d (it may still start; see %s): %w", r.Name, pid, r.PortStart, logPath, ctx.Err())
		case <-time.After(min(wait, 10*time.Millisecond)):
		}
	}
	return c, nil
}

// tailFrom returns the last n lines a file got from offset from on,
// indented, or "  (nothing)"; "" if the file cannot be read.
func tailFrom(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if from > 0 && from <= int64(len(b)) {
		b = b[from:]
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return "  (nothing)"
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
