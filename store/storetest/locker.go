package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// RunLocker checks the store.Locker contract. open must return a new, empty
// store for each sub-test; the sub-tests are skipped if it is no Locker.
func RunLocker(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, l store.Locker)
	}{
		{"Take", testLockTake},
		{"Reentrant", testLockReentrant},
		{"OtherOwner", testLockOtherOwner},
		{"Unlock", testUnlock},
		{"UnlockOther", testUnlockOther},
		{"ForceUnlock", testForceUnlock},
		{"UnlockFree", testUnlockFree},
		{"Invalid", testLockInvalid},
		{"Concurrent", testLockConcurrent},
		{"Namespace", testLockNamespace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, open)
			l, ok := s.(store.Locker)
			if !ok {
				t.Skipf("%T does not implement store.Locker", s)
			}
			tt.fn(t, s, l)
		})
	}
}

func lock(t *testing.T, l store.Locker, name, owner string) {
	t.Helper()
	if err := l.TryLock(t.Context(), name, owner); err != nil {
		t.Fatalf("TryLock(%q, %q): %v", name, owner, err)
	}
}

func wantOwner(t *testing.T, l store.Locker, name, want string) {
	t.Helper()
	got, err := l.LockOwner(t.Context(), name)
	if want == "" {
		if !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("LockOwner(%q) = %q, %v; want ErrNotFound", name, got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Errorf("LockOwner(%q) = %q, %v; want %q", name, got, err, want)
	}
}

// wantLocked checks that err reports lock name held by owner.
func wantLocked(t *testing.T, err error, name, owner string) {
	t.Helper()
	if !errors.Is(err, errs.ErrLocked) {
		t.Errorf("err = %v, want ErrLocked", err)
	}
	var le *store.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v (%T), want a *store.LockedError", err, err)
	}
	if le.Name != name || le.Owner != owner {
		t.Errorf("LockedError = %+v, want name %q owner %q", le, name, owner)
	}
}

func testLockTake(t *testing.T, _ store.Store, l store.Locker) {
	wantOwner(t, l, "vol", "")
	lock(t, l, "vol", "host-a")
	wantOwner(t, l, "vol", "host-a")
	lock(t, l, "vol2", "host-b")
	wantOwner(t, l, "vol2", "host-b")
	wantOwner(t, l, "vol", "host-a")
}

func testLockReentrant(t *testing.T, _ store.Store, l store.Locker) {
	for range 3 {
		lock(t, l, "vol", "host-a")
	}
	wantOwner(t, l, "vol", "host-a")
	// One unlock releases a lock taken many times.
	if err := l.Unlock(t.Context(), "vol", "host-a", false); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	wantOwner(t, l, "vol", "")
}

func testLockOtherOwner(t *testing.T, _ store.Store, l store.Locker) {
	lock(t, l, "vol", "host-a")
	err := l.TryLock(t.Context(), "vol", "host-b")
	wantLocked(t, err, "vol", "host-a")
	wantOwner(t, l, "vol", "host-a")
}

func testUnlock(t *testing.T, _ store.Store, l store.Locker) {
	ctx := t.Context()
	lock(t, l, "vol", "host-a")
	if err := l.Unlock(ctx, "vol", "host-a", false); err != nil {
		t.Fatalf("Unlock by the owner: %v", err)
	}
	wantOwner(t, l, "vol", "")
	lock(t, l, "vol", "host-b")
	wantOwner(t, l, "vol", "host-b")
	if err := l.Unlock(ctx, "vol", "host-b", true); err != nil {
		t.Fatalf("forced Unlock by the owner: %v", err)
	}
	wantOwner(t, l, "vol", "")
}

func testUnlockOther(t *testing.T, _ store.Store, l store.Locker) {
	lock(t, l, "vol", "host-a")
	err := l.Unlock(t.Context(), "vol", "host-b", false)
	wantErr(t, "Unlock by another owner", err, errs.ErrNotOwner)
	wantOwner(t, l, "vol", "host-a")
}

func testForceUnlock(t *testing.T, _ store.Store, l store.Locker) {
	lock(t, l, "vol", "host-a")
	if err := l.Unlock(t.Context(), "vol", "host-b", true); err != nil {
		t.Fatalf("forced Unlock: %v", err)
	}
	wantOwner(t, l, "vol", "")
	lock(t, l, "vol", "host-b")
	wantOwner(t, l, "vol", "host-b")
}

func testUnlockFree(t *testing.T, _ store.Store, l store.Locker) {
	ctx := t.Context()
	wantErr(t, "Unlock of a free lock", l.Unlock(ctx, "vol", "host-a", false), errs.ErrNotFound)
	wantErr(t, "forced Unlock of a free lock", l.Unlock(ctx, "vol", "host-a", true), errs.ErrNotFound)
	lock(t, l, "vol", "host-a")
	if err := l.Unlock(ctx, "vol", "host-a", false); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "second Unlock", l.Unlock(ctx, "vol", "host-a", false), errs.ErrNotFound)
}

func testLockInvalid(t *testing.T, _ store.Store, l store.Locker) {
	ctx := t.Context()
	for _, name := range badNames {
		wantErr(t, fmt.Sprintf("TryLock(%.20q)", name), l.TryLock(ctx, name, "o"), errs.ErrInvalid)
		wantErr(t, fmt.Sprintf("Unlock(%.20q)", name), l.Unlock(ctx, name, "o", true), errs.ErrInvalid)
		_, err := l.LockOwner(ctx, name)
		wantErr(t, fmt.Sprintf("LockOwner(%.20q)", name), err, errs.ErrInvalid)
	}
	for _, owner := range []string{"", "two\nlines", "nul\x00", strings.Repeat("o", store.MaxNameLen+1)} {
		wantErr(t, fmt.Sprintf("TryLock owner %.20q", owner), l.TryLock(ctx, "vol", owner), errs.ErrInvalid)
		wantErr(t, fmt.Sprintf("Unlock owner %.20q", owner), l.Unlock(ctx, "vol", owner, false), errs.ErrInvalid)
	}
	wantOwner(t, l, "vol", "")
	// Odd but valid owners round-trip.
	for _, owner := range []string{"host-a:1234", "with space", "ünï", "x", strings.Repeat("o", store.MaxNameLen)} {
		lock(t, l, "odd", owner)
		wantOwner(t, l, "odd", owner)
		if err := l.Unlock(ctx, "odd", owner, false); err != nil {
			t.Fatal(err)
		}
	}
}

// testLockConcurrent races owners for locks: exactly one wins each round,
// and the losers are told who won.
func testLockConcurrent(t *testing.T, _ store.Store, l store.Locker) {
	ctx := t.Context()
	const owners = 16
	for round := range 5 {
		name := fmt.Sprintf("vol%d", round%2)
		var (
			mu      sync.Mutex
			winners []string
			losers  []error
			wg      sync.WaitGroup
		)
		for i := range owners {
			owner := fmt.Sprintf("owner-%d-%d", round, i)
			wg.Go(func() {
				err := l.TryLock(ctx, name, owner)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					winners = append(winners, owner)
				} else {
					losers = append(losers, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners %q, want exactly one", round, len(winners), winners)
		}
		for _, err := range losers {
			wantLocked(t, err, name, winners[0])
		}
		wantOwner(t, l, name, winners[0])
		if err := l.Unlock(ctx, name, winners[0], false); err != nil {
			t.Fatal(err)
		}
	}
	// Many goroutines, many locks, each with its own owner.
	var wg sync.WaitGroup
	for i := range owners {
		wg.Go(func() {
			name, owner := fmt.Sprintf("own%d", i), fmt.Sprintf("owner%d", i)
			for range 10 {
				if err := l.TryLock(ctx, name, owner); err != nil {
					t.Errorf("TryLock(%q): %v", name, err)
					return
				}
				if err := l.Unlock(ctx, name, owner, false); err != nil {
					t.Errorf("Unlock(%q): %v", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// testLockNamespace checks that locks and objects are apart.
func testLockNamespace(t *testing.T, s store.Store, l store.Locker) {
	ctx := t.Context()
	write(t, s, "vol", []byte("object"), 0, false)
	lock(t, l, "vol", "host-a")
	lock(t, l, "lockonly", "host-a")
	lock(t, l, "vol_lock", "host-a")
	if got := list(t, s, ""); !slices.Equal(got, []string{"vol"}) {
		t.Errorf("List with locks held = %q, want [vol]", got)
	}
	wantMissing(t, s, "lockonly")
	wantContent(t, s, "vol", []byte("object"))
	if err := s.Delete(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	wantOwner(t, l, "vol", "host-a")
	if err := l.Unlock(ctx, "vol", "host-a", false); err != nil {
		t.Fatal(err)
	}
	write(t, s, "vol", []byte("again"), 0, false)
	wantOwner(t, l, "vol", "")
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := list(t, s, ""); !slices.Equal(got, []string{"vol"}) {
		t.Errorf("List = %q, want [vol]", got)
	}
}
