//go:build ceph

package radosstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// lockRetries bounds the rounds of TryLock and Unlock that race with other
// takers and releasers of the same lock.
const lockRetries = 10

// TryLock implements store.Locker: create the lock object exclusively with
// the owner in it, or read who holds it.
func (s *Store) TryLock(ctx context.Context, name, owner string) error {
	if err := store.ValidOwner(owner); err != nil {
		return fmt.Errorf("radosstore: lock %q: %w", name, err)
	}
	if err := s.enterName(ctx, "lock", name); err != nil {
		return err
	}
	defer s.ops.Done()
	content := []byte(owner + "\n")
	for range lockRetries {
		op := rados.CreateWriteOp()
		op.Create(rados.CreateExclusive)
		op.WriteFull(content)
		err := op.Operate(s.lio, name, rados.OperationNoFlag)
		op.Release()
		if err == nil {
			return nil
		}
		if errno(err) != -int(syscall.EEXIST) {
			return opErr("lock", name, err)
		}
		holder, err := s.readOwner(name)
		switch {
		case errno(err) == -int(syscall.ENOENT):
			continue // released meanwhile
		case err != nil:
			return opErr("lock", name, err)
		case holder == owner:
			return nil // re-entrant; the first take was durable
		}
		return fmt.Errorf("radosstore: %w", &store.LockedError{Name: name, Owner: holder})
	}
	return fmt.Errorf("radosstore: lock %q: raced with unlocks too often: %w", name, errs.ErrBusy)
}

// Unlock implements store.Locker: read the owner, check it, and remove the
// lock object only if it still holds that owner. Once it is removed, the
// waiters of every Store are told in the background (watch.go).
func (s *Store) Unlock(ctx context.Context, name, owner string, force bool) error {
	if err := store.ValidOwner(owner); err != nil {
		return fmt.Errorf("radosstore: unlock %q: %w", name, err)
	}
	if err := s.enterName(ctx, "unlock", name); err != nil {
		return err
	}
	defer s.ops.Done()
	for range lockRetries {
		holder, err := s.readOwner(name)
		var expect []byte
		switch {
		case err == nil:
			if holder != owner && !force {
				return fmt.Errorf("radosstore: unlock %q by %q: held by %q: %w", name, owner, holder, errs.ErrNotOwner)
			}
			expect = []byte(holder + "\n")
		case errno(err) == -int(syscall.ENOENT):
			return fmt.Errorf("radosstore: unlock %q: not locked: %w", name, errs.ErrNotFound)
		case force && errors.Is(err, errs.ErrCorrupt):
			// Break a corrupt lock without comparing.
		default:
			return opErr("unlock", name, err)
		}
		op := rados.CreateWriteOp()
		if expect != nil {
			op.CmpExt(expect, 0)
		}
		op.Remove()
		err = op.Operate(s.lio, name, rados.OperationNoFlag)
		op.Release()
		switch code := errno(err); {
		case err == nil:
			s.announceRelease(name)
			return nil
		case code == -int(syscall.ENOENT):
			return fmt.Errorf("radosstore: unlock %q: not locked: %w", name, errs.ErrNotFound)
		case code <= -maxErrno || code == -int(syscall.ECANCELED):
			continue // cmpext mismatch: taken by another owner meanwhile
		default:
			return opErr("unlock", name, err)
		}
	}
	return fmt.Errorf("radosstore: unlock %q: raced with other lockers too often: %w", name, errs.ErrBusy)
}

// maxErrno is librados's MAX_ERRNO: a failed cmpext at offset i returns
// -maxErrno - i.
const maxErrno = 4095

// LockOwner implements store.Locker.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	if err := s.enterName(ctx, "lock owner", name); err != nil {
		return "", err
	}
	defer s.ops.Done()
	holder, err := s.readOwner(name)
	if err != nil {
		if errors.Is(err, errs.ErrCorrupt) {
			return "", err
		}
		return "", opErr("lock owner", name, err)
	}
	return holder, nil
}

// readOwner returns the owner written in lock object name: the owner and a
// newline. Content of any other form is corrupt (an error wrapping
// errs.ErrCorrupt); RADOS errors are returned as they are.
func (s *Store) readOwner(name string) (string, error) {
	buf := make([]byte, store.MaxNameLen+2)
	n, err := s.lio.Read(name, buf, 0)
	if err != nil {
		return "", err
	}
	owner, ok := strings.CutSuffix(string(buf[:n]), "\n")
	if !ok || store.ValidOwner(owner) != nil {
		return "", fmt.Errorf("radosstore: lock object %q holds %.60q: %w", name, buf[:n], errs.ErrCorrupt)
	}
	return owner, nil
}
