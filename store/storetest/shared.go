package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// RunShared checks two clients of one storage: two stores that open the
// same directory or pool, as two hosts (or two blocker processes) do. A
// change made through one is seen through the other as soon as it
// returns: whatever a client caches (open files, metadata) must never
// outlive the object it names. open returns the two clients of a new,
// empty storage; the suite closes both (a may be b).
func RunShared(t *testing.T, open func(t *testing.T) (a, b store.Store)) {
	opener := func(t *testing.T) (store.Store, store.Store) {
		t.Helper()
		a, b := open(t)
		for _, s := range []store.Store{a, b} {
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		return a, b
	}
	t.Run("Replaced", func(t *testing.T) {
		a, b := opener(t)
		testSharedReplaced(t, a, b)
	})
	t.Run("Random", func(t *testing.T) {
		for seed := range uint64(6) {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				a, b := opener(t)
				testSharedRandom(t, a, b, seed)
			})
		}
	})
	t.Run("Locks", func(t *testing.T) {
		a, b := opener(t)
		testSharedLocks(t, a, b)
	})
}

// testSharedReplaced: b has read an object; a deletes it, creates it
// again, copies over it; b must see each state, and b's writes must land
// in the object a reads.
func testSharedReplaced(t *testing.T, a, b store.Store) {
	ctx := t.Context()
	write(t, a, "obj", []byte("one"), 0, false)
	wantContent(t, b, "obj", []byte("one"))

	if err := a.Delete(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, b, "obj")
	_, err := b.ReadAt(ctx, "obj", make([]byte, 3), 0)
	wantErr(t, "read through b of an object deleted through a", err, errs.ErrNotFound)
	wantErr(t, "truncate through b of an object deleted through a", b.Truncate(ctx, "obj", 1), errs.ErrNotFound)

	write(t, a, "obj", []byte("two"), 0, false)
	wantContent(t, b, "obj", []byte("two"))
	if err := a.Delete(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	write(t, a, "obj", []byte("three"), 0, false)
	write(t, b, "obj", []byte("B"), 0, false)
	wantContent(t, a, "obj", []byte("Bhree"))

	write(t, a, "src", []byte("copied"), 0, false)
	if err := a.Copy(ctx, "src", "obj"); err != nil {
		t.Fatal(err)
	}
	wantContent(t, b, "obj", []byte("copied"))
	write(t, b, "obj", []byte("C"), 0, true)
	wantContent(t, a, "obj", []byte("Copied"))

	// A write through b after a's delete makes the object anew; it does
	// not vanish.
	if err := a.Delete(ctx, "obj"); err != nil {
		t.Fatal(err)
	}
	write(t, b, "obj", []byte("four"), 0, false)
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, a, "obj", []byte("four"))
	if got := list(t, a, "obj"); len(got) != 1 {
		t.Errorf("List through a after b's write: %q", got)
	}
}

// testSharedRandom runs random operations, each through a or b, against
// a model of the objects; every read, through either, must match it.
func testSharedRandom(t *testing.T, a, b store.Store, seed uint64) {
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(seed, 0x54a7ed))
	clients := []store.Store{a, b}
	names := []string{"s0", "s1", "s2"}
	model := map[string][]byte{}
	for step := range 300 {
		c := rng.IntN(2)
		s, who := clients[c], "ab"[c:c+1]
		name := names[rng.IntN(len(names))]
		cur, exists := model[name]
		where := fmt.Sprintf("step %d: %s", step, who)
		switch r := rng.IntN(100); {
		case r < 35:
			off, n := rng.IntN(3000), 1+rng.IntN(2000)
			p := pattern(uint64(step), n)
			write(t, s, name, p, int64(off), rng.IntN(4) == 0)
			if len(cur) < off+n {
				cur = append(cur, make([]byte, off+n-len(cur))...)
			}
			copy(cur[off:], p)
			model[name] = cur
		case r < 65:
			p := make([]byte, 6000)
			n, err := s.ReadAt(ctx, name, p, 0)
			switch {
			case !exists:
				wantErr(t, where+" reads a missing object", err, errs.ErrNotFound)
			case err != nil:
				t.Fatalf("%s reads %q: %v", where, name, err)
			case !bytes.Equal(p[:n], cur):
				t.Fatalf("%s reads %q: %s", where, name, diff(p[:n], cur))
			}
		case r < 75:
			size, err := s.Stat(ctx, name)
			switch {
			case !exists:
				wantErr(t, where+" stats a missing object", err, errs.ErrNotFound)
			case err != nil || size != int64(len(cur)):
				t.Fatalf("%s stats %q: %d, %v; want %d", where, name, size, err, len(cur))
			}
		case r < 82:
			n := rng.IntN(4000)
			err := s.Truncate(ctx, name, int64(n))
			if !exists {
				wantErr(t, where+" truncates a missing object", err, errs.ErrNotFound)
				continue
			}
			if err != nil {
				t.Fatalf("%s truncates %q: %v", where, name, err)
			}
			if n < len(cur) {
				cur = cur[:n]
			} else {
				cur = append(cur, make([]byte, n-len(cur))...)
			}
			model[name] = cur
		case r < 90:
			err := s.Delete(ctx, name)
			if !exists {
				wantErr(t, where+" deletes a missing object", err, errs.ErrNotFound)
				continue
			}
			if err != nil {
				t.Fatalf("%s deletes %q: %v", where, name, err)
			}
			delete(model, name)
		case r < 97:
			src := names[rng.IntN(len(names))]
			data, ok := model[src]
			err := s.Copy(ctx, src, name)
			if !ok {
				wantErr(t, where+" copies a missing object", err, errs.ErrNotFound)
				continue
			}
			if err != nil {
				t.Fatalf("%s copies %q to %q: %v", where, src, name, err)
			}
			model[name] = bytes.Clone(data)
		default:
			if err := s.Sync(ctx); err != nil {
				t.Fatalf("%s syncs: %v", where, err)
			}
		}
	}
}

// testSharedLocks: a lock taken through one client holds through the
// other.
func testSharedLocks(t *testing.T, a, b store.Store) {
	la, ok1 := a.(store.Locker)
	lb, ok2 := b.(store.Locker)
	if !ok1 || !ok2 {
		t.Skipf("%T does not implement store.Locker", a)
	}
	ctx := t.Context()
	lock(t, la, "vol", "host-a")
	wantOwner(t, lb, "vol", "host-a")
	wantLocked(t, lb.TryLock(ctx, "vol", "host-b"), "vol", "host-a")
	if err := lb.Unlock(ctx, "vol", "host-b", false); !errors.Is(err, errs.ErrNotOwner) {
		t.Errorf("Unlock through b of a's lock = %v, want ErrNotOwner", err)
	}
	if err := la.Unlock(ctx, "vol", "host-a", false); err != nil {
		t.Fatal(err)
	}
	lock(t, lb, "vol", "host-b")
	wantOwner(t, la, "vol", "host-b")
	if err := la.Unlock(ctx, "vol", "host-a", true); err != nil {
		t.Fatalf("forced Unlock through a: %v", err)
	}
	wantOwner(t, lb, "vol", "")
}
