package volume

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/faultstore"
)

// TestReleaseRetried: the last writer of host B goes while B's maps
// blocker cannot be reached (a restart of blockerm), so giving the lock
// back fails — at the sync before it, or at the unlock. The lock must not
// stay B's for good (A's writes would wait forever): RetryReleases gives
// it back once the store answers again, after making the write durable.
func TestReleaseRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule func(vol string) faultstore.Rule
	}{
		{"unlock fails", lockFails},
		{"sync fails", func(string) faultstore.Rule {
			return faultstore.Rule{Ops: faultstore.OpSync, Errno: syscall.EIO}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			const vol = "left-while-blockerm-restarts"
			v, b, k := writtenBySession(t, vol)
			f := v.plan.Inject(tc.rule(vol))
			_ = b.CloseSession(ctx, vol, k) // fails or not: the lock is not given back
			if err := b.RetryReleases(ctx); err == nil {
				t.Fatal("RetryReleases succeeded while the store fails")
			}
			f.Remove()
			if o := lockOwner(t, b, vol); o != "host-b" {
				t.Fatalf("while the store failed the lock went to %q", o)
			}
			if err := b.RetryReleases(ctx); err != nil {
				t.Fatal(err)
			}
			if o := lockOwner(t, b, vol); o != "" {
				t.Fatalf("after RetryReleases the lock is held by %q", o)
			}
			// Nothing left to do, and the write was made durable first.
			if err := b.RetryReleases(ctx); err != nil {
				t.Fatal(err)
			}
			v.crash(t)
			got, err := readVol(ctx, v.e, v.dataStore(), vol, 0, 4096)
			if err != nil || !bytes.Equal(got, fill('b', 4096)) {
				t.Fatalf("after a crash the volume reads %q, %v", runs(got), err)
			}
		})
	}
}

// TestReleaseRetryLeavesNewHolders: a release that failed is not retried
// over a writer that took the volume's lock again since.
func TestReleaseRetryLeavesNewHolders(t *testing.T) {
	ctx := context.Background()
	const vol = "written-again"
	v, b, k := writtenBySession(t, vol)
	f := v.plan.Inject(lockFails(vol))
	_ = b.CloseSession(ctx, vol, k)
	f.Remove()
	id := openSession(t, b, vol, k, true)
	if err := writeVol(ctx, b, v.dataStore(), Ref(vol, id), 4096, fill('c', 4096)); err != nil {
		t.Fatal(err)
	}
	if err := b.RetryReleases(ctx); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "host-b" || !b.Held(vol) {
		t.Fatalf("RetryReleases took the lock from a writer: owner %q, held %v", o, b.Held(vol))
	}
}

// TestCloseOfInheritedSession: mapperd restarts while a connection that
// wrote is open; the new mapperd knows nothing of the session or of the
// lock its predecessor took for it. When the connection closes, the lock
// goes back (after a sync), unless this mapperd uses the volume itself.
func TestCloseOfInheritedSession(t *testing.T) {
	ctx := context.Background()
	const vol = "written-before-a-restart"
	v, b, k := writtenBySession(t, vol)
	// mapperd restarts: a new engine of the same owner.
	b2 := engineAs(t, v, "host-b")
	if err := b2.CloseSession(ctx, vol, k); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b2, vol); o != "" {
		t.Fatalf("after the inherited session closed the lock is held by %q", o)
	}
	v.crash(t)
	got, err := readVol(ctx, v.e, v.dataStore(), vol, 0, 4096)
	if err != nil || !bytes.Equal(got, fill('b', 4096)) {
		t.Fatalf("after a crash the volume reads %q, %v", runs(got), err)
	}

	// An explicit Open on the new engine keeps the lock; another host's
	// lock is never touched.
	b = engineAs(t, v, "host-b")
	if err := b.Open(ctx, vol); err != nil {
		t.Fatal(err)
	}
	b2 = engineAs(t, v, "host-b")
	if err := b2.Open(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := b2.CloseSession(ctx, vol, k); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b2, vol); o != "host-b" {
		t.Fatalf("a stray CLOSE gave back a lock Open took: owner %q", o)
	}
	if err := b2.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	a := engineAs(t, v, "host-a")
	if err := a.Open(ctx, vol); err != nil {
		t.Fatal(err)
	}
	b3 := engineAs(t, v, "host-b")
	if err := b3.CloseSession(ctx, vol, k); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b3, vol); o != "host-a" {
		t.Fatalf("a stray CLOSE on host-b changed host-a's lock: owner %q", o)
	}
}

// TestInheritedLockRetried: the CLOSE of a session an earlier mapperd
// opened comes while the maps blocker restarts (who holds the lock cannot
// be read): the lock is given back later, by RetryReleases.
func TestInheritedLockRetried(t *testing.T) {
	ctx := context.Background()
	const vol = "closed-while-blockerm-restarts"
	v, _, k := writtenBySession(t, vol)
	b2 := engineAs(t, v, "host-b") // mapperd restarted
	f := v.plan.Inject(lockFails(vol))
	if err := b2.CloseSession(ctx, vol, k); err == nil {
		t.Fatal("CloseSession succeeded while the lock could not be read")
	}
	f.Remove()
	if o := lockOwner(t, b2, vol); o != "host-b" {
		t.Fatalf("lock owner %q, want host-b", o)
	}
	if err := b2.RetryReleases(ctx); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b2, vol); o != "" {
		t.Fatalf("after RetryReleases the lock is held by %q", o)
	}
}

// writtenBySession makes volume vol on host-a's engine, and returns the
// environment, host-b's engine and the key of a session through which
// host-b wrote 'b' into the first 4 KiB (so host-b holds the lock).
func writtenBySession(t *testing.T, vol string) (*env, *Engine, SessionKey) {
	t.Helper()
	ctx := context.Background()
	v := newEnv(t, modelBS)
	b := engineAs(t, v, "host-b")
	if err := v.e.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	k := SessionKey{Port: 1, PID: 10, Handle: 1}
	id := openSession(t, b, vol, k, true)
	if err := writeVol(ctx, b, v.dataStore(), Ref(vol, id), 0, fill('b', 4096)); err != nil {
		t.Fatal(err)
	}
	return v, b, k
}

// lockFails fails every call on volume vol's lock with EIO.
func lockFails(vol string) faultstore.Rule {
	return faultstore.Rule{Ops: faultstore.OpLock, Object: func(n string) bool { return n == lockName(vol) }, Errno: syscall.EIO}
}

// TestVanishedVolumeReleaseRetried: a write to a volume that does not
// exist (removed by another host, say) takes its free lock before it finds
// no header, and gives it back; if that unlock fails, RetryReleases gives
// it back later instead of leaving it held for ever.
func TestVanishedVolumeReleaseRetried(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	const vol = "gone-under-us"
	owner := func() string {
		o, err := v.maps.LockOwner(ctx, lockName(vol))
		if errors.Is(err, errs.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	// The TryLock passes, the Unlock after it fails.
	f := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpLock, Object: func(n string) bool { return n == lockName(vol) },
		Skip: 1, Times: 1, Errno: syscall.EIO})
	if _, err := v.e.MapWrite(ctx, vol, 0, 4096); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("MapWrite of a missing volume: %v, want ErrNotFound", err)
	}
	f.Remove()
	if o := owner(); o != v.owner {
		t.Fatalf("after the failed unlock the lock is held by %q, want %q (the fault did not hit the unlock)", o, v.owner)
	}
	if err := v.e.RetryReleases(ctx); err != nil {
		t.Fatal(err)
	}
	if o := owner(); o != "" {
		t.Fatalf("after RetryReleases the lock of the missing volume is held by %q", o)
	}
}
