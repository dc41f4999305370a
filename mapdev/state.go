package mapdev

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
)

// StateVersion is the version of the State record's format.
const StateVersion = 1

// State is the record of one mapping, MappedDir/<id>.json.
type State struct {
	Version    int    `json:"version"`
	ID         int    `json:"id"`
	Volume     string `json:"volume"`
	Device     string `json:"device"`     // /dev/loopN
	PID        int    `json:"pid"`        // the map daemon
	Mountpoint string `json:"mountpoint"` // RUN_DIR/mnt/<id>
	File       string `json:"file"`       // the mapped file below it
	ReadOnly   bool   `json:"readonly"`
	DirectIO   bool   `json:"direct_io"` // the loop device does direct I/O
}

// Registry keeps the mappings of one installation (NewRegistry).
//
// Layout:
//
//	MappedDir/<id>.json   State (written whole, by rename)
//	MountDir/<id>/        the daemon's FUSE mountpoint
//	MountDir/<id>.lock    flock held by the daemon while it lives
type Registry struct {
	// MappedDir holds the State records and nothing else
	// (config.MappedDir: RUN_DIR/mapped).
	MappedDir string
	// MountDir holds the mountpoints and the daemons' locks
	// (config.MountDir: RUN_DIR/mnt).
	MountDir string
}

// NewRegistry is the Registry of the installation that cfg describes.
func NewRegistry(cfg *config.Config) Registry {
	return Registry{MappedDir: cfg.MappedDir(), MountDir: cfg.MountDir()}
}

// Mountpoint is where mapping id's daemon mounts its filesystem.
func (r Registry) Mountpoint(id int) string { return filepath.Join(r.MountDir, strconv.Itoa(id)) }

func (r Registry) statePath(id int) string {
	return filepath.Join(r.MappedDir, strconv.Itoa(id)+".json")
}

func (r Registry) lockPath(id int) string { return r.Mountpoint(id) + ".lock" }

// Reserve picks the lowest id that is neither recorded nor locked and
// returns it with its lock held (flock on the returned file). The map
// daemon must hold that file (inherited) for as long as it lives; its
// death releases the lock.
func (r Registry) Reserve() (int, *os.File, error) {
	for _, d := range []string{r.MappedDir, r.MountDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, nil, err
		}
	}
	for id := 0; id < 1<<16; id++ {
		if _, err := os.Stat(r.statePath(id)); err == nil {
			continue // mapped, or left by a dead daemon until unmapped
		}
		f, err := os.OpenFile(r.lockPath(id), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return 0, nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another map is starting with this id
			}
			return 0, nil, fmt.Errorf("lock %s: %w", r.lockPath(id), err)
		}
		if _, err := os.Stat(r.statePath(id)); err == nil {
			f.Close() // recorded meanwhile
			continue
		}
		return id, f, nil
	}
	return 0, nil, fmt.Errorf("no free mapping id in %s: %w", r.MappedDir, errs.ErrNoSpace)
}

// Lock takes mapping id's lock for a daemon started by hand (not through
// Reserve); it fails with errs.ErrBusy if a live daemon holds it.
func (r Registry) Lock(id int) (*os.File, error) {
	if err := os.MkdirAll(r.MountDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(r.lockPath(id), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("mapping %d: its lock is held by a live daemon: %w", id, errs.ErrBusy)
	}
	return f, nil
}

// Alive reports whether mapping id's daemon lives (holds its lock).
func (r Registry) Alive(id int) bool {
	f, err := os.Open(r.lockPath(id))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// Save writes a mapping's record (atomically: readers see all of it or
// nothing).
func (r Registry) Save(s State) error {
	s.Version = StateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.MappedDir, 0o755); err != nil {
		return err
	}
	// The temporary file lives outside mapped/, which must hold records
	// only (archipelago stop counts them).
	tmp := filepath.Join(r.MountDir, "."+strconv.Itoa(s.ID)+".json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.statePath(s.ID))
}

// Load reads mapping id's record; errs.ErrNotFound if there is none,
// errs.ErrCorrupt if it cannot be read.
func (r Registry) Load(id int) (State, error) {
	return r.load(r.statePath(id))
}

func (r Registry) load(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("mapping record %s: %w", path, errs.ErrNotFound)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("mapping record %s: %v: %w", path, err, errs.ErrCorrupt)
	}
	if s.Version != StateVersion {
		return s, fmt.Errorf("mapping record %s: version %d, want %d: %w", path, s.Version, StateVersion, errs.ErrVersion)
	}
	return s, nil
}

// List returns every mapping's record, by id.
func (r Registry) List() ([]State, error) {
	ents, err := os.ReadDir(r.MappedDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		s, err := r.load(filepath.Join(r.MappedDir, e.Name()))
		if errors.Is(err, errs.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Remove deletes mapping id's record, lock file and mountpoint directory
// (which must not be mounted any more).
func (r Registry) Remove(id int) error {
	err := os.Remove(r.statePath(id))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	os.Remove(r.Mountpoint(id))
	os.Remove(r.lockPath(id))
	return err
}
