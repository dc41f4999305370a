package faultstore_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// Without faults the wrapper is a store like any other.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store {
		return faultstore.Wrap(memstore.New(), faultstore.NewPlan(1))
	})
}

func TestLocker(t *testing.T) {
	storetest.RunLocker(t, func(*testing.T) store.Store {
		return faultstore.Wrap(memstore.New(), faultstore.NewPlan(1))
	})
}

func setup(t *testing.T) (context.Context, *memstore.Store, *faultstore.Plan, *faultstore.Store) {
	ctx := context.Background()
	inner := memstore.New()
	p := faultstore.NewPlan(1)
	s := faultstore.Wrap(inner, p)
	for _, n := range []string{"obj-a", "obj-b"} {
		if err := inner.WriteAt(ctx, n, []byte("0123456789"), 0, true); err != nil {
			t.Fatal(err)
		}
	}
	return ctx, inner, p, s
}

func read(t *testing.T, s store.Store, name string) ([]byte, error) {
	t.Helper()
	b := make([]byte, 16)
	n, err := s.ReadAt(context.Background(), name, b, 0)
	return b[:n], err
}

func TestArm(t *testing.T) {
	ctx, inner, p, s := setup(t)
	p.Arm(1, faultstore.Fail)
	if err := s.WriteAt(ctx, "obj-a", []byte("x"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, "obj-a", []byte("y"), 0, true); !errors.Is(err, faultstore.ErrInjected) {
		t.Fatalf("armed call: %v", err)
	}
	if b, _ := read(t, inner, "obj-a"); string(b) != "x123456789" {
		t.Fatalf("failed write was done: %q", b)
	}
	p.Arm(p.Index(), faultstore.FailAfter)
	if err := s.Delete(ctx, "obj-b"); !errors.Is(err, errs.ErrIO) {
		t.Fatalf("fail-after: %v", err)
	}
	if _, err := inner.Stat(ctx, "obj-b"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("fail-after did not delete: %v", err)
	}
	p.Arm(p.Index(), faultstore.Crash)
	if err := s.Sync(ctx); err == nil || !p.Crashed() || !p.Fired() {
		t.Fatalf("crash: %v", err)
	}
	if _, err := read(t, s, "obj-a"); err == nil {
		t.Fatal("read after a crash works")
	}
	if err := s.TryLock(ctx, "l", "me"); err == nil {
		t.Fatal("lock after a crash works")
	}
}

func TestTorn(t *testing.T) {
	ctx := context.Background()
	inner := memstore.New()
	p := faultstore.NewPlan(7)
	s := faultstore.Wrap(inner, p)
	p.Torn = true
	p.Arm(0, faultstore.Crash)
	big := bytes.Repeat([]byte{'t'}, 4096)
	if err := s.WriteAt(ctx, "torn", big, 0, true); err == nil {
		t.Fatal("crashed write succeeded")
	}
	n, _ := inner.Stat(ctx, "torn")
	if n <= 0 || n >= 4096 || n%512 != 0 {
		t.Fatalf("torn write left %d bytes, want a sector prefix", n)
	}
}

func TestErrno(t *testing.T) {
	ctx, inner, p, s := setup(t)
	for _, c := range []struct {
		errno    syscall.Errno
		sentinel error
	}{{syscall.EIO, errs.ErrIO}, {syscall.ENOSPC, errs.ErrNoSpace}, {syscall.EROFS, errs.ErrIO}} {
		f := p.Inject(faultstore.Rule{Ops: faultstore.OpWrite, Object: faultstore.Named("obj-a"), Errno: c.errno})
		err := s.WriteAt(ctx, "obj-a", []byte("zz"), 0, true)
		if !errors.Is(err, c.sentinel) || !errors.Is(err, c.errno) {
			t.Errorf("%v: %v", c.errno, err)
		}
		if b, _ := read(t, inner, "obj-a"); string(b) != "0123456789" {
			t.Errorf("%v: the failed write was done: %q", c.errno, b)
		}
		// Other objects and operations pass.
		if err := s.WriteAt(ctx, "obj-b", []byte("b"), 0, true); err != nil {
			t.Errorf("%v: other object: %v", c.errno, err)
		}
		if _, err := read(t, s, "obj-a"); err != nil {
			t.Errorf("%v: read: %v", c.errno, err)
		}
		if f.Hits() != 1 {
			t.Errorf("%v: %d hits", c.errno, f.Hits())
		}
		f.Remove()
	}
	if err := s.WriteAt(ctx, "obj-a", []byte("zz"), 0, true); err != nil {
		t.Fatalf("after Remove: %v", err)
	}
	// After: done, then failed.
	p.Inject(faultstore.Rule{Ops: faultstore.OpWrite, Errno: syscall.EIO, After: true})
	if err := s.WriteAt(ctx, "obj-a", []byte("yy"), 0, true); !errors.Is(err, syscall.EIO) {
		t.Fatalf("after: %v", err)
	}
	if b, _ := read(t, inner, "obj-a"); string(b) != "yy23456789" {
		t.Fatalf("after: the write was not done: %q", b)
	}
	p.Clear()
	// Skip and Times; locks and Sync (no object) match a rule without
	// Object.
	p.Inject(faultstore.Rule{Ops: faultstore.OpRead, Skip: 1, Times: 2, Errno: syscall.EIO})
	var got []bool
	for range 5 {
		_, err := read(t, s, "obj-a")
		got = append(got, err != nil)
	}
	if !slices.Equal(got, []bool{false, true, true, false, false}) {
		t.Fatalf("skip 1, times 2: failures %v", got)
	}
	p.Inject(faultstore.Rule{Ops: faultstore.OpLock | faultstore.OpSync, Errno: syscall.EROFS})
	if err := s.TryLock(ctx, "l", "me"); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("lock: %v", err)
	}
	if err := s.Sync(ctx); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("sync: %v", err)
	}
	// A rule for another store does not apply.
	p.Clear()
	p.Inject(faultstore.Rule{Store: memstore.New(), Errno: syscall.EIO})
	if _, err := read(t, s, "obj-a"); err != nil {
		t.Fatalf("rule of another store: %v", err)
	}
}

func TestDamage(t *testing.T) {
	ctx, inner, p, s := setup(t)
	f := p.Inject(faultstore.Rule{Ops: faultstore.OpRead, Object: faultstore.Named("obj-a"), Flip: true, FlipAt: 3, FlipMask: 0x01})
	if b, err := read(t, s, "obj-a"); err != nil || string(b) != "0122456789" {
		t.Fatalf("flip: %q %v", b, err)
	}
	b := make([]byte, 4)
	if _, err := s.ReadAt(ctx, "obj-a", b, 5); err != nil || string(b) != "5678" {
		t.Fatalf("read not covering the flip: %q %v", b, err)
	}
	if b, _ := read(t, inner, "obj-a"); string(b) != "0123456789" {
		t.Fatalf("flip changed the store: %q", b)
	}
	f.Remove()
	p.Inject(faultstore.Rule{Object: faultstore.Prefixed("obj-b"), Truncated: true, Size: 4})
	if b, err := read(t, s, "obj-b"); err != nil || string(b) != "0123" {
		t.Fatalf("truncated: %q %v", b, err)
	}
	if n, err := s.Stat(ctx, "obj-b"); err != nil || n != 4 {
		t.Fatalf("truncated stat: %d %v", n, err)
	}
	b = []byte("..........")
	if n, err := s.ReadAt(ctx, "obj-b", b, 2); err != nil || n != 2 || string(b) != "23\x00\x00\x00\x00\x00\x00.." {
		t.Fatalf("truncated read at 2: %d %q %v", n, b, err)
	}
	p.Clear()
	p.Inject(faultstore.Rule{Object: faultstore.Named("obj-a"), Missing: true})
	if _, err := read(t, s, "obj-a"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("missing read: %v", err)
	}
	if _, err := s.Stat(ctx, "obj-a"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("missing stat: %v", err)
	}
	if err := s.Copy(ctx, "obj-a", "obj-c"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("missing copy: %v", err)
	}
	var names []string
	if err := s.List(ctx, "obj-", func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, "obj-a") || !slices.Contains(names, "obj-b") {
		t.Fatalf("list with obj-a missing: %q", names)
	}
	p.Clear()
	// At rest: FlipByte.
	if err := faultstore.FlipByte(ctx, inner, "obj-a", 9, 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := read(t, inner, "obj-a"); string(b) != "012345678\xc6" {
		t.Fatalf("FlipByte: %q", b)
	}
	if err := faultstore.FlipByte(ctx, inner, "obj-a", 10, 0); !errors.Is(err, errs.ErrInvalid) {
		t.Fatalf("FlipByte past the end: %v", err)
	}
}

func TestDelay(t *testing.T) {
	ctx, _, p, s := setup(t)
	p.Inject(faultstore.Rule{Ops: faultstore.OpRead, Delay: time.Hour})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.ReadAt(cctx, "obj-a", make([]byte, 4), 0)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a read delayed by an hour returned: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("delayed read after cancel: %v", err)
	}
	// Writes are not delayed by a read rule.
	if err := s.WriteAt(ctx, "obj-a", []byte("w"), 0, true); err != nil {
		t.Fatal(err)
	}
}
