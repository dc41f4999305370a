package composer_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// These are the behaviours the original's tests checked, each through the
// segment with real peer processes (filed ×2, mapperd, vlmcd).

const (
	mib = 1 << 20
	gib = 1 << 30
)

func mustRead(t *testing.T, s *stacktest.Stack, vol string, off uint64, want []byte) {
	t.Helper()
	got := s.Read(t, vol, off, len(want))
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("read %s@%d: differs at byte %d: got %#x want %#x", vol, off, i, got[i], want[i])
	}
}

func TestWriteReadSurvivesRestart(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create(t, "volume1", 64*mib)
	// One session, left open across the restart: what Flush and a FUA
	// write made durable survives, not what a Close synced.
	v := s.Session(t, "volume1")
	// Spans a block boundary (4 MiB), unaligned.
	data := testutil.Pattern(3*mib+123, 1)
	off := uint64(3*mib - 1000)
	if err := v.WriteAt(t.Context(), data, off, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	fua := testutil.Pattern(4096, 9)
	if err := v.WriteAt(t.Context(), fua, 40*mib, true); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s, "volume1", off, data)
	s.Restart(t)
	mustRead(t, s, "volume1", off, data)
	mustRead(t, s, "volume1", 40*mib, fua)
	mustRead(t, s, "volume1", 50*mib, make([]byte, 8192)) // never written: zeros
}

func TestSnapshotKeepsOldData(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create(t, "origin", 32*mib)
	old := testutil.Pattern(5*mib, 2)
	s.Write(t, "origin", 0, old, false)
	s.Snapshot(t, "origin", "origin-snap1")
	s.Write(t, "origin", 1*mib, testutil.Pattern(2*mib, 3), false)
	mustRead(t, s, "origin-snap1", 0, old)
	if vi := s.Info(t, "origin-snap1"); !vi.ReadOnly || !vi.Snapshot {
		t.Errorf("snapshot not a read-only snapshot: %+v", vi)
	}
	if err := s.TryWrite("origin-snap1", 0, []byte("x"), false); !errors.Is(err, errs.ErrReadOnly) {
		t.Errorf("write to a snapshot: %v, want ErrReadOnly", err)
	}
}

func TestLargerCloneReadsZerosPastParent(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create(t, "image100", 100*gib)
	tail := testutil.Pattern(4096, 4)
	s.Write(t, "image100", 100*gib-4096, tail, false)
	s.Snapshot(t, "image100", "image100-snap")
	s.Clone(t, "image100-snap", "clone200", 200*gib)
	if vi := s.Info(t, "clone200"); vi.Size != 200*gib {
		t.Fatalf("clone size %d", vi.Size)
	}
	mustRead(t, s, "clone200", 100*gib-4096, tail)
	mustRead(t, s, "clone200", 100*gib, make([]byte, 64<<10))
	mustRead(t, s, "clone200", 200*gib-4096, make([]byte, 4096))
	if err := s.TryClone("image100-snap", "clone50", 50*gib); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("clone smaller than parent: %v, want ErrInvalid", err)
	}
}

func TestCloneWritesDoNotLeak(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create(t, "parent", 16*mib)
	base := testutil.Pattern(16*mib, 5)
	s.Write(t, "parent", 0, base, false)
	s.Snapshot(t, "parent", "parent-snap")
	s.Clone(t, "parent-snap", "child1", 0)
	s.Clone(t, "parent-snap", "child2", 0)
	s.Write(t, "child1", 4096, testutil.Pattern(8192, 6), false)
	mustRead(t, s, "parent-snap", 0, base)
	mustRead(t, s, "parent", 0, base)
	mustRead(t, s, "child2", 0, base)
	want := append([]byte(nil), base...)
	copy(want[4096:], testutil.Pattern(8192, 6))
	mustRead(t, s, "child1", 0, want)
}

func TestRecreatedNameGetsNewEpoch(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create(t, "phoenix", 8*mib)
	s.Write(t, "phoenix", 0, testutil.Pattern(4096, 7), false)
	vi1 := s.Info(t, "phoenix")
	s.Remove(t, "phoenix")
	if _, err := s.TryInfo("phoenix"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("info after remove: %v, want ErrNotFound", err)
	}
	s.Create(t, "phoenix", 8*mib)
	vi2 := s.Info(t, "phoenix")
	if vi2.Epoch <= vi1.Epoch {
		t.Fatalf("epoch %d after re-create, was %d", vi2.Epoch, vi1.Epoch)
	}
	mustRead(t, s, "phoenix", 0, make([]byte, 4096)) // nothing of the old volume
}

func TestReadsWhileAnotherHostHoldsTheLock(t *testing.T) {
	data, maps := t.TempDir(), t.TempDir()
	a := stacktest.Start(t, stacktest.Options{DataDir: data, MapDir: maps, HostID: "host-a"})
	b := stacktest.Start(t, stacktest.Options{DataDir: data, MapDir: maps, HostID: "host-b"})
	a.Create(t, "shared", 8*mib)
	content := testutil.Pattern(8192, 8)
	a.Write(t, "shared", 0, content, true)
	a.Lock(t, "shared")
	mustRead(t, b, "shared", 0, content)
	err := b.TryLock("shared")
	if !errors.Is(err, errs.ErrLocked) || !strings.Contains(err.Error(), "host-a") {
		t.Fatalf("lock by host-b: %v, want locked by host-a", err)
	}
	if err := b.TrySnapshot("shared", "shared-snap"); !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("snapshot by host-b: %v, want ErrLocked", err)
	}
	if vi := b.Info(t, "shared"); vi.LockOwner != "host-a" {
		t.Errorf("info lock owner %q", vi.LockOwner)
	}
}

func TestNewIdentityCannotLockUntilForced(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{HostID: "host-a"})
	s.Create(t, "locked1", 8*mib)
	s.Open(t, "locked1")
	// The same identity takes its lock back after a crash.
	s.Restart(t)
	if err := s.TryOpen("locked1"); err != nil {
		t.Fatalf("open after restart with the same identity: %v", err)
	}
	// Another identity cannot, until the lock is broken.
	s.Opts.HostID = "host-c"
	s.Restart(t)
	if err := s.TryLock("locked1"); !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("lock by a new identity: %v, want ErrLocked", err)
	}
	if err := s.TryUnlock("locked1", false); !errors.Is(err, errs.ErrNotOwner) {
		t.Fatalf("unlock without force: %v, want ErrNotOwner", err)
	}
	if err := s.TryUnlock("locked1", true); err != nil {
		t.Fatalf("forced unlock: %v", err)
	}
	if err := s.TryLock("locked1"); err != nil {
		t.Fatalf("lock after force: %v", err)
	}
}
