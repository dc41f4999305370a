package memstore_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

func open(*testing.T) store.Store { return memstore.New() }

func TestConformance(t *testing.T) { storetest.Run(t, open) }

func TestLocker(t *testing.T) { storetest.RunLocker(t, open) }

func TestCrash(t *testing.T) {
	storetest.RunCrash(t, func(*testing.T) *memstore.Store { return memstore.New() })
}

// TestCrashKeepsOnlyDurable pins the memory store's own choice among the
// outcomes the contract allows: a crash keeps nothing that was not durable.
func TestCrashKeepsOnlyDurable(t *testing.T) {
	ctx := t.Context()
	s := memstore.New()
	defer s.Close()
	if err := s.WriteAt(ctx, "synced", []byte("old"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, "synced", []byte("new"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, "synced", []byte("F"), 5, true); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(ctx, "volatile", []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	c := s.Crash()
	defer c.Close()
	p := make([]byte, 10)
	n, err := c.ReadAt(ctx, "synced", p, 0)
	if err != nil || !bytes.Equal(p[:n], []byte("old\x00\x00F")) {
		t.Errorf("synced after crash = %q, %v; want the synced bytes and the FUA byte", p[:n], err)
	}
	if _, err := c.Stat(ctx, "volatile"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("unsynced object after crash: Stat = %v, want ErrNotFound", err)
	}
	// The crashed store is unaffected by the original and vice versa.
	if err := s.WriteAt(ctx, "synced", []byte("zzz"), 0, true); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.ReadAt(ctx, "synced", p, 0); string(p[:3]) != "old" || n != 6 {
		t.Errorf("crashed store changed by a write to the original: %q", p[:n])
	}
}

func TestTooLarge(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx := t.Context()
	if err := s.WriteAt(ctx, "obj", []byte("x"), memstore.MaxObjectSize, false); !errors.Is(err, errs.ErrTooLarge) {
		t.Errorf("WriteAt past MaxObjectSize = %v, want ErrTooLarge", err)
	}
	if err := s.WriteAt(ctx, "obj", nil, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Truncate(ctx, "obj", memstore.MaxObjectSize+1); !errors.Is(err, errs.ErrTooLarge) {
		t.Errorf("Truncate past MaxObjectSize = %v, want ErrTooLarge", err)
	}
}
