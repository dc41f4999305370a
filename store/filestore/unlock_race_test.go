package filestore

import (
	"errors"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// TestUnlockKeepsAnotherOwnersLock: host A holds a lock and unlocks it
// just as host B breaks it (unlock -f) and takes it. A's unlock must not
// delete B's lock: it looked at the owner (itself) before B's break, and
// an unlink by path would remove whatever lock file is there by then.
func TestUnlockKeepsAnotherOwnersLock(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	a := openTest(t, Options{Dir: dir})
	b := openTest(t, Options{Dir: dir})
	const name = "vol_lock"
	if err := a.TryLock(ctx, name, "host-a"); err != nil {
		t.Fatal(err)
	}
	var breakErr, lockErr error
	unlockHook = func() {
		unlockHook = nil
		// Between A's look at the owner and its unlink: B breaks A's
		// lock and takes it.
		breakErr = b.Unlock(ctx, name, "host-b", true)
		lockErr = b.TryLock(ctx, name, "host-b")
	}
	t.Cleanup(func() { unlockHook = nil })
	aErr := a.Unlock(ctx, name, "host-a", false)
	if lockErr != nil {
		t.Fatalf("B's lock after breaking A's: %v (break: %v)", lockErr, breakErr)
	}
	owner, err := b.LockOwner(ctx, name)
	if err != nil || owner != "host-b" {
		t.Fatalf("after A's unlock (%v) raced with B's break (%v) and lock: owner %q, %v; want host-b", aErr, breakErr, owner, err)
	}
	// A learns that the lock was not its own any more, or that it released
	// its own before B broke nothing: either way B holds the lock now.
	if aErr != nil && !errors.Is(aErr, errs.ErrNotOwner) && !errors.Is(aErr, errs.ErrNotFound) {
		t.Errorf("A's unlock: %v", aErr)
	}
}
