package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// TryLock implements store.Locker.
func (s *Store) TryLock(ctx context.Context, name, owner string) error {
	if err := store.ValidOwner(owner); err != nil {
		return fmt.Errorf("filestore: lock %q: %w", name, err)
	}
	if err := s.begin(ctx, "lock", name); err != nil {
		return err
	}
	p := s.place(s.lockDir, name)
	// Look first: a held lock costs no temporary file.
	if done, err := s.heldBy(p, name, owner); done {
		return err
	}
	tmp, err := createTemp(s.fs, s.lockTmpDir)
	if err != nil {
		return lockErr("lock", name, err)
	}
	defer s.fs.Unlink(tmp.Name())
	err = tmp.Pwrite([]byte(owner+"\n"), 0)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return lockErr("lock", name, err)
	}
	for range 10 {
		err := s.fs.Link(tmp.Name(), p.file)
		switch {
		case err == nil:
			s.dirChanged(p.leaf)
			if err := s.syncPath(p, s.seq.Add(1)); err != nil {
				return lockErr("lock", name, err)
			}
			return nil
		case errors.Is(err, fs.ErrNotExist):
			if err := s.makeLeaf(p); err != nil {
				return lockErr("lock", name, err)
			}
		case errors.Is(err, fs.ErrExist):
			if done, err := s.heldBy(p, name, owner); done {
				return err
			}
			// Released meanwhile: try again.
		default:
			return lockErr("lock", name, err)
		}
	}
	return fmt.Errorf("filestore: lock %q: raced with unlocks too often: %w", name, errs.ErrBusy)
}

// heldBy reports whether lock p is held, and if so the answer of TryLock
// for owner: nil (durably) if owner holds it, a *store.LockedError if
// another does.
func (s *Store) heldBy(p placement, name, owner string) (bool, error) {
	holder, err := s.readLock(p.file)
	seen := s.seq.Add(1)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return true, lockErr("lock", name, err)
	case holder != owner:
		return true, fmt.Errorf("filestore: %w", &store.LockedError{Name: name, Owner: holder})
	}
	// Re-entrant: make sure that the earlier take is durable (it may have
	// been by this owner's process before a restart).
	if err := s.syncPath(p, seen); err != nil {
		return true, lockErr("lock", name, err)
	}
	return true, nil
}

// Unlock implements store.Locker.
func (s *Store) Unlock(ctx context.Context, name, owner string, force bool) error {
	if err := store.ValidOwner(owner); err != nil {
		return fmt.Errorf("filestore: unlock %q: %w", name, err)
	}
	if err := s.begin(ctx, "unlock", name); err != nil {
		return err
	}
	p := s.place(s.lockDir, name)
	s.unlockMu.Lock()
	defer s.unlockMu.Unlock()
	// The lock file is first moved aside, atomically, and only then read:
	// deciding on what the path held a moment ago and then unlinking the
	// path would delete a lock that another host took in between (after
	// breaking ours with force).
	aside := filepath.Join(s.lockTmpDir, "unlock-"+strconv.FormatUint(rand.Uint64(), 36))
	if err := s.fs.Rename(p.file, aside); err != nil {
		return lockErr("unlock", name, err)
	}
	s.dirChanged(p.leaf)
	holder, err := s.readLock(aside)
	if unlockHook != nil {
		unlockHook()
	}
	var refuse error
	switch {
	case err != nil && !(force && errors.Is(err, errs.ErrCorrupt)):
		refuse = lockErr("unlock", name, err)
	case err == nil && holder != owner && !force:
		refuse = fmt.Errorf("filestore: unlock %q by %q: held by %q: %w", name, owner, holder, errs.ErrNotOwner)
	}
	if refuse != nil {
		// Not ours to remove: put it back. While it was aside the lock
		// looked free; if somebody took it meanwhile, theirs stays.
		if err := s.fs.Link(aside, p.file); err != nil && !errors.Is(err, fs.ErrExist) {
			refuse = fmt.Errorf("%w; and putting the lock back failed: %v", refuse, err)
		}
	}
	if err := s.fs.Unlink(aside); err != nil && !errors.Is(err, fs.ErrNotExist) && refuse == nil {
		return lockErr("unlock", name, err)
	}
	if err := s.syncDirs(p.leaf); err != nil && refuse == nil {
		return lockErr("unlock", name, err)
	}
	return refuse
}

// LockOwner implements store.Locker.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	if err := s.begin(ctx, "lock owner", name); err != nil {
		return "", err
	}
	holder, err := s.readLock(s.place(s.lockDir, name).file)
	if err != nil {
		return "", lockErr("lock owner", name, err)
	}
	return holder, nil
}

// readLock returns the owner written in a lock file: the owner and a
// newline. A lock file of any other form is corrupt.
func (s *Store) readLock(path string) (string, error) {
	data, err := readFile(s.fs, path)
	if err != nil {
		return "", err
	}
	owner, ok := strings.CutSuffix(string(data), "\n")
	if !ok || store.ValidOwner(owner) != nil {
		return "", fmt.Errorf("lock file %s holds %.60q: %w", path, data, errs.ErrCorrupt)
	}
	return owner, nil
}

func lockErr(op, name string, err error) error {
	return fmt.Errorf("filestore: %s %q: %w", op, name, ioErr(err))
}

// unlockHook, if set (by tests), runs in Unlock after it has read who
// holds the lock and before it acts on it.
var unlockHook func()
