package peer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/xseg"
)

// A pidfile names the process that serves a role, and that process holds
// an exclusive flock on it for as long as it runs. So:
//   - two processes never serve one role: the second cannot take the lock
//     (whatever segment each of them joined, and even if the first one's
//     segment file was deleted);
//   - whether the role's process lives is the lock, not a pid that may
//     have been reused;
//   - only the process the file names writes or removes it (it holds the
//     lock while it does), so a slowly exiting peer never removes its
//     successor's pidfile.
//
// The file holds "<pid>\n", as every tool expects. A reader tells the
// named process from another one that got the same pid by the lock; for
// a file nobody holds (a peer from before the lock, or a dead one), the
// process must have started before the file was written. (A second field,
// a start time in clock ticks since boot, is checked if present.)

// Pidfile is a pidfile this process holds.
type Pidfile struct {
	path string
	f    *os.File
}

// pidfileWait is how long TakePidfile retries a lock held by someone else:
// readers (ReadPidfile) hold it for a moment only.
const pidfileWait = 2 * time.Second

// TakePidfile locks the pidfile at path for this process and empties it
// (WritePid fills it). It fails with errs.ErrBusy, naming the pid, while
// another live process holds it.
func TakePidfile(path string) (*Pidfile, error) {
	deadline := time.Now().Add(pidfileWait)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("pidfile: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// The holder before us may have removed the file between our
			// open and our lock: then we locked a file nobody sees.
			if sameFile(f, path) {
				// Nobody holds it; but a peer from before the lock
				// holds none and may still run.
				if pi := readPid(f, false); pi.Alive && pi.PID != os.Getpid() {
					f.Close()
					return nil, fmt.Errorf("pidfile %s names pid %d, which runs and holds no lock on it (a peer of an earlier version?): %w", path, pi.PID, errs.ErrBusy)
				}
				if err := f.Truncate(0); err != nil {
					f.Close()
					return nil, fmt.Errorf("pidfile %s: %w", path, err)
				}
				return &Pidfile{path: path, f: f}, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("pidfile %s: lock: %w", path, err)
		}
		if time.Now().After(deadline) {
			pi := ReadPidfile(path)
			who := "another process"
			if pi.PID != 0 {
				who = "pid " + strconv.Itoa(pi.PID)
			}
			return nil, fmt.Errorf("pidfile %s is held by %s, which serves this role: %w", path, who, errs.ErrBusy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WritePid writes this process's pid and start time into the pidfile.
func (p *Pidfile) WritePid() error {
	line := strconv.Itoa(os.Getpid()) + "\n"
	if _, err := p.f.WriteAt([]byte(line), 0); err != nil {
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	return nil
}

// Remove removes the pidfile (it still names this process: nobody else
// writes it while we hold its lock) and lets go of the lock.
func (p *Pidfile) Remove() {
	if p == nil || p.f == nil {
		return
	}
	os.Remove(p.path)
	p.f.Close()
	p.f = nil
}

// PidInfo is what a pidfile says about the process of a role.
type PidInfo struct {
	// PID is the pid the file names (0 if none: no file, or a process
	// that has locked it and not written it yet).
	PID int
	// Held: a live process holds the file's lock (it serves the role).
	Held bool
	// Alive: the named process lives and is the one that wrote the file:
	// it holds the lock, or it started before the file was written (and
	// at the start time the file gives, if it gives one).
	Alive bool
	// Exists: there is a file.
	Exists bool
}

// Running reports whether the role's process runs.
func (pi PidInfo) Running() bool { return pi.Held || pi.Alive }

// ReadPidfile reads the pidfile at path and checks its process.
func ReadPidfile(path string) PidInfo {
	f, err := os.Open(path)
	if err != nil {
		return PidInfo{}
	}
	defer f.Close()
	held := false
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		held = true
	} else if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	return readPid(f, held)
}

// RemoveStalePidfile removes the pidfile at path if no process serves
// the role by it (a killed peer's): nobody holds its lock, and the pid it
// names does not run (or is another process now). A pidfile of a running
// peer is never touched. It reports whether it removed the file.
func RemoveStalePidfile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil || !sameFile(f, path) {
		return false
	}
	if readPid(f, false).Alive {
		return false
	}
	return os.Remove(path) == nil
}

// sameFile reports whether f is still the file at path.
func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	return unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(path, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev
}

// readPid reads an open pidfile; held says whether another process holds
// its lock.
func readPid(f *os.File, held bool) PidInfo {
	pi := PidInfo{Exists: true, Held: held}
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	fields := strings.Fields(string(b[:n]))
	if len(fields) == 0 {
		return pi
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return pi
	}
	pi.PID = pid
	alive, start := xseg.ProcessStart(pid)
	switch {
	case !alive:
	case len(fields) > 1:
		want, err := strconv.ParseUint(fields[1], 10, 64)
		pi.Alive = err == nil && want == start
	case pi.Held:
		pi.Alive = true
	default:
		// Nobody holds it: a peer from before the lock, or the pid of a
		// dead one that another process got since (it started after the
		// file was written).
		if fi, err := f.Stat(); err == nil {
			pi.Alive = !xseg.ProcessStartedAfter(pid, fi.ModTime())
		}
	}
	if pi.Held && !pi.Alive {
		// The lock says a process serves the role and the file names
		// another one: trust the lock, not the pid.
		pi.PID = 0
	}
	return pi
}
