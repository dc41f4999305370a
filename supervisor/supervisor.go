// Package supervisor starts, stops and inspects the peers of one
// configuration: the logic of the archipelago program.
//
// # What it manages
//
// Each role of the configuration ([PEERS] ORDER) is served by one daemon
// (filed, radosd, mapperd, vlmcd or nbdd, by its type), started with
// --role and --config, detached from the caller (its own session), with
// its output appended to its log (config.LogFile). A running peer holds a
// lock on its pidfile (config.PidFile) and writes its pid there once it
// owns its first port of the segment: the supervisor reads the pidfile
// (peer.ReadPidfile), never a process list, to know who serves a role.
// The one exception is a peer no pidfile names (its segment was removed
// under it, or its pidfile was): such peers are found by the segment file
// they map (/proc/<pid>/maps), so that status shows them and stop stops
// them.
//
// # Hosted roles
//
// The roles of [PEERS] HOSTED run together in one process instead:
// archipelagod, with a --role for each (in ORDER) and --config, its output
// appended to config.HostLogFile. Each of them still holds its own pidfile
// (all naming the host's pid) and binds its own ports, so everything
// above holds per role. Start launches one archipelagod for the hosted
// roles it starts that are not running, where the first of them is in
// ORDER, and waits for each of them. Stop stops them with one SIGTERM to
// the host where the last of them is in ORDER; stopping some of the roles
// of a host without the others is refused (errs.ErrBusy), naming them.
// Run restarts a host that died with all its roles. Status shows the
// host's pid for each and that it is hosted.
//
// # Operations
//
//   - Start creates the segment if needed (replacing one no live peer
//     uses), then starts the roles in ORDER; a role already running is
//     left alone. It refuses while peers run on a segment that was removed
//     or replaced.
//   - Stop stops the roles in reverse ORDER (SIGTERM, then the peer's own
//     drain); stopping every role removes the segment. Without force it
//     refuses while volumes are mapped or NBD clients are connected,
//     counted from the kernel's socket tables.
//   - Restart is Stop then Start under one run lock.
//   - Status writes one line per role and fails unless every role runs;
//     StatusJSON writes the same facts (Report) as JSON.
//   - Run (archipelago run, what archipelago.service runs) is Start, then
//     supervision in the foreground: a peer that dies without a stop
//     asking for it is restarted with back-off, one that crashes too often
//     is marked failed; SIGTERM stops everything as Stop does (see Run).
//
// Start, Stop and Restart of one configuration exclude each other through
// an flock on <RUN_DIR>/archipelago.lock: a second one waits (up to
// RunLockWait) and then sees what the first one did. Run takes that lock
// while it starts and for each restart, not in between, so that the other
// commands keep working beside it. Stop leaves <RUN_DIR>/<role>.stopped
// for each role it stops (Start removes it): Run does not restart a role
// stopped on purpose. Run keeps its view of the roles in
// <RUN_DIR>/archipelago-run.json, which Status reads while Run holds
// <RUN_DIR>/archipelago-run.lock (runstate.go).
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
)

// Timing of the supervisor's waits.
const (
	// RunLockWait bounds how long Start, Stop or Restart waits for
	// another one on the same configuration.
	RunLockWait = 3 * time.Minute
	// launchWait bounds how long Start waits for a peer it started to
	// own its first port and write its pidfile.
	launchWait = 15 * time.Second
	// pidSettle is how long Start and Stop wait for a pidfile whose lock
	// a live process holds but that names no live process yet.
	pidSettle = 5 * time.Second
	// stopWait is how long Stop waits for a peer after SIGTERM; killWait
	// how long after SIGKILL (force).
	stopWait = 15 * time.Second
	killWait = 5 * time.Second
	// clientsSettle is how long Stop re-reads a client count that is not
	// zero, for clients that are just leaving.
	clientsSettle = time.Second
)

// programs maps a role type to the program that serves it.
var programs = map[string]string{
	config.TypeFileBlocker:  "filed",
	config.TypeRadosBlocker: "radosd",
	config.TypeMapperd:      "mapperd",
	config.TypeVlmcd:        "vlmcd",
	config.TypeNBDEndpoint:  "nbdd",
}

// Options are the choices of the caller beyond the configuration.
type Options struct {
	// ConfigPath is the configuration file as the user named it (made
	// absolute for the peers' --config). "" lets each peer find its
	// configuration the same way config.Load did.
	ConfigPath string
	// StorageOnly leaves the block endpoint (nbd_endpoint roles) alone
	// when no role is named (archipelago -u): only the storage peers
	// start and stop, and the segment stays.
	StorageOnly bool
}

// Supervisor starts, stops and inspects the roles of one configuration.
// Its methods write what they do, one line per step, to out; they may be
// called one after the other, and by several processes at once (see the
// package doc on the run lock).
type Supervisor struct {
	cfg  *config.Config
	opts Options
	// launched, if set, is told of every peer start launches (Run
	// watches its children through it).
	launched func(r *config.Role, c *child)
}

// New returns the supervisor of cfg's roles.
func New(cfg *config.Config, opts Options) *Supervisor {
	return &Supervisor{cfg: cfg, opts: opts}
}

// Start starts the named roles, or every role (less the block endpoint
// with StorageOnly) if none is named, in ORDER, creating the segment
// first if needed. A role already running is reported and left alone.
// It fails (wrapping errs.ErrBusy) if peers still run on a segment that
// was removed or replaced, or if a role's process runs without owning its
// port; a role that is not configured is errs.ErrNotFound. If a peer
// fails to start, the error quotes the end of its log; a segment this
// call created and that no peer uses is removed again.
func (s *Supervisor) Start(ctx context.Context, out io.Writer, roles ...string) error {
	unlock, err := s.runLock(ctx, out, "start")
	if err != nil {
		return err
	}
	defer unlock()
	return s.start(ctx, out, roles)
}

// Stop stops the named roles, or every role (less the block endpoint with
// StorageOnly) if none is named, in reverse ORDER, and then any peer on
// the segment that no pidfile names. Stopping every role removes the
// segment. Without force it refuses (errs.ErrBusy) while volumes are
// mapped or NBD clients are connected, and fails if a peer does not stop
// within 15 s; with force it kills such a peer.
func (s *Supervisor) Stop(ctx context.Context, out io.Writer, force bool, roles ...string) error {
	unlock, err := s.runLock(ctx, out, "stop")
	if err != nil {
		return err
	}
	defer unlock()
	return s.stop(ctx, out, force, roles)
}

// Restart is Stop, then Start, under one run lock: no other start or
// stop runs between them.
func (s *Supervisor) Restart(ctx context.Context, out io.Writer, force bool, roles ...string) error {
	unlock, err := s.runLock(ctx, out, "restart")
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.stop(ctx, out, force, roles); err != nil {
		return err
	}
	return s.start(ctx, out, roles)
}

// roles returns the roles to act on, in ORDER: those named, or every
// role (less the block endpoint with StorageOnly) if none is.
func (s *Supervisor) roles(names []string) ([]*config.Role, error) {
	var out []*config.Role
	for i := range s.cfg.Roles {
		r := &s.cfg.Roles[i]
		if len(names) > 0 && !slices.Contains(names, r.Name) {
			continue
		}
		if s.opts.StorageOnly && r.Type == config.TypeNBDEndpoint && len(names) == 0 {
			continue
		}
		out = append(out, r)
	}
	for _, name := range names {
		if _, ok := s.cfg.Role(name); ok {
			continue
		}
		all := make([]string, len(s.cfg.Roles))
		for i, r := range s.cfg.Roles {
			all[i] = r.Name
		}
		return nil, fmt.Errorf("no role %q in %s (roles: %s): %w", name, s.cfgName(), strings.Join(all, ", "), errs.ErrNotFound)
	}
	return out, nil
}

// cfgName names the configuration in messages.
func (s *Supervisor) cfgName() string {
	if s.cfg.Path == "" {
		return "the built-in configuration"
	}
	return s.cfg.Path
}

// proc reads a role's pidfile and checks its process (peer.ReadPidfile:
// the lock a running peer holds on it, and the pid's identity).
func (s *Supervisor) proc(r *config.Role) peer.PidInfo {
	return peer.ReadPidfile(s.cfg.PidFile(r.Name))
}

// pid is the pid of the role's running process; 0 if none runs (or it has
// not written its pid yet).
func (s *Supervisor) pid(r *config.Role) int {
	if pi := s.proc(r); pi.Running() {
		return pi.PID
	}
	return 0
}

// removeStale removes a role's pidfile if no process holds it (a peer that
// was killed leaves it). A running peer's pidfile is never touched.
func (s *Supervisor) removeStale(r *config.Role) { peer.RemoveStalePidfile(s.cfg.PidFile(r.Name)) }

// runLock serialises start, stop and restart of one configuration: they
// take an exclusive flock on <RUN_DIR>/archipelago.lock for their whole
// run. A second one says who holds it and waits (up to RunLockWait);
// when its turn comes it sees what the first one did (a second start
// finds the peers running). The function it returns releases the lock.
func (s *Supervisor) runLock(ctx context.Context, out io.Writer, what string) (func(), error) {
	if err := os.MkdirAll(s.cfg.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w (run it as root, or as the user that started the peers)", what, err)
	}
	path := filepath.Join(s.cfg.RunDir, "archipelago.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrPermission) {
		// Another user's installation: a read-only descriptor takes the
		// lock too, and what comes next says what this user may not do.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (run it as root, or as the user that started the peers)", what, s.cfgName(), err)
	}
	deadline := time.Now().Add(RunLockWait)
	said := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		holder := "another archipelago"
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s (%s) still runs after %v; not starting %s beside it: %w", holder, path, RunLockWait, what, errs.ErrBusy)
		}
		if !said {
			fmt.Fprintf(out, "%s runs (%s): waiting for it to finish\n", holder, path)
			said = true
		}
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: waiting for %s (%s): %w", what, holder, path, err)
		}
	}
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("archipelago %s (pid %d)\n", what, os.Getpid())), 0)
	return func() { f.Truncate(0); f.Close() }, nil
}

// pause waits for d, or until ctx ends (its error).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
