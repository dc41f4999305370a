package composer_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/xseg"
)

// These are the behaviours the original's tests checked, each through the
// segment with real peer processes (filed ×2, mapperd, vlmcd).

const (
	mib = 1 << 20
	gib = 1 << 30
)

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func mustRead(t *testing.T, s *stacktest.Stack, vol string, off uint64, want []byte) {
	t.Helper()
	got, err := s.Read(vol, off, len(want))
	if err != nil {
		t.Fatalf("read %s@%d: %v", vol, off, err)
	}
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
	if err := s.Create("volume1", 64*mib); err != nil {
		t.Fatal(err)
	}
	// Spans a block boundary (4 MiB), unaligned.
	data := pattern(1, 3*mib+123)
	off := uint64(3*mib - 1000)
	if err := s.Write("volume1", off, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush("volume1"); err != nil {
		t.Fatal(err)
	}
	fua := pattern(9, 4096)
	if err := s.Write("volume1", 40*mib, fua, xseg.FlagFUA); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s, "volume1", off, data)
	s.Restart()
	mustRead(t, s, "volume1", off, data)
	mustRead(t, s, "volume1", 40*mib, fua)
	mustRead(t, s, "volume1", 50*mib, make([]byte, 8192)) // never written: zeros
}

func TestSnapshotKeepsOldData(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create("origin", 32*mib)
	old := pattern(2, 5*mib)
	if err := s.Write("origin", 0, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot("origin", "origin-snap1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("origin", 1*mib, pattern(3, 2*mib), 0); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s, "origin-snap1", 0, old)
	vi, err := s.Info("origin-snap1")
	if err != nil {
		t.Fatal(err)
	}
	if vi.Flags == 0 {
		t.Errorf("snapshot not read-only: %+v", vi)
	}
	if err := s.Write("origin-snap1", 0, []byte("x"), 0); !errors.Is(err, errs.ErrReadOnly) {
		t.Errorf("write to a snapshot: %v, want ErrReadOnly", err)
	}
}

func TestLargerCloneReadsZerosPastParent(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	if err := s.Create("image100", 100*gib); err != nil {
		t.Fatal(err)
	}
	tail := pattern(4, 4096)
	s.Write("image100", 100*gib-4096, tail, 0)
	s.Snapshot("image100", "image100-snap")
	if err := s.Clone("image100-snap", "clone200", 200*gib); err != nil {
		t.Fatal(err)
	}
	vi, _ := s.Info("clone200")
	if vi.Size != 200*gib {
		t.Fatalf("clone size %d", vi.Size)
	}
	mustRead(t, s, "clone200", 100*gib-4096, tail)
	mustRead(t, s, "clone200", 100*gib, make([]byte, 64<<10))
	mustRead(t, s, "clone200", 200*gib-4096, make([]byte, 4096))
	if err := s.Clone("image100-snap", "clone50", 50*gib); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("clone smaller than parent: %v, want ErrInvalid", err)
	}
}

func TestCloneWritesDoNotLeak(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create("parent", 16*mib)
	base := pattern(5, 16*mib)
	s.Write("parent", 0, base, 0)
	s.Snapshot("parent", "parent-snap")
	s.Clone("parent-snap", "child1", 0)
	s.Clone("parent-snap", "child2", 0)
	if err := s.Write("child1", 4096, pattern(6, 8192), 0); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s, "parent-snap", 0, base)
	mustRead(t, s, "parent", 0, base)
	mustRead(t, s, "child2", 0, base)
	want := append([]byte(nil), base...)
	copy(want[4096:], pattern(6, 8192))
	mustRead(t, s, "child1", 0, want)
}

func TestRecreatedNameGetsNewEpoch(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	s.Create("phoenix", 8*mib)
	s.Write("phoenix", 0, pattern(7, 4096), 0)
	vi1, _ := s.Info("phoenix")
	if err := s.Remove("phoenix"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info("phoenix"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("info after remove: %v", err)
	}
	if err := s.Create("phoenix", 8*mib); err != nil {
		t.Fatal(err)
	}
	vi2, _ := s.Info("phoenix")
	if vi2.Epoch <= vi1.Epoch {
		t.Fatalf("epoch %d after re-create, was %d", vi2.Epoch, vi1.Epoch)
	}
	mustRead(t, s, "phoenix", 0, make([]byte, 4096)) // nothing of the old volume
}

func TestReadsWhileAnotherHostHoldsTheLock(t *testing.T) {
	data, maps := t.TempDir(), t.TempDir()
	a := stacktest.Start(t, stacktest.Options{DataDir: data, MapDir: maps, HostID: "host-a"})
	b := stacktest.Start(t, stacktest.Options{DataDir: data, MapDir: maps, HostID: "host-b"})
	a.Create("shared", 8*mib)
	content := pattern(8, 8192)
	a.Write("shared", 0, content, xseg.FlagFUA)
	if err := a.Op(xseg.OpAcquire, "shared", xseg.FlagNoSync); err != nil {
		t.Fatal(err)
	}
	mustRead(t, b, "shared", 0, content)
	err := b.Op(xseg.OpAcquire, "shared", xseg.FlagNoSync)
	if !errors.Is(err, errs.ErrLocked) || !strings.Contains(err.Error(), "host-a") {
		t.Fatalf("lock by host-b: %v, want locked by host-a", err)
	}
	if err := b.Snapshot("shared", "shared-snap"); !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("snapshot by host-b: %v, want ErrLocked", err)
	}
	vi, _ := b.Info("shared")
	if vi.LockOwner != "host-a" {
		t.Errorf("info lock owner %q", vi.LockOwner)
	}
}

func TestNewIdentityCannotLockUntilForced(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{HostID: "host-a"})
	s.Create("locked1", 8*mib)
	if err := s.Op(xseg.OpOpen, "locked1", 0); err != nil {
		t.Fatal(err)
	}
	// The same identity takes its lock back after a crash.
	s.Restart()
	if err := s.Op(xseg.OpOpen, "locked1", 0); err != nil {
		t.Fatalf("open after restart with the same identity: %v", err)
	}
	// Another identity cannot, until the lock is broken.
	s.Opts.HostID = "host-c"
	s.Restart()
	if err := s.Op(xseg.OpAcquire, "locked1", xseg.FlagNoSync); !errors.Is(err, errs.ErrLocked) {
		t.Fatalf("lock by a new identity: %v, want ErrLocked", err)
	}
	if err := s.Op(xseg.OpRelease, "locked1", 0); !errors.Is(err, errs.ErrNotOwner) {
		t.Fatalf("unlock without force: %v, want ErrNotOwner", err)
	}
	if err := s.Op(xseg.OpRelease, "locked1", xseg.FlagForce); err != nil {
		t.Fatalf("forced unlock: %v", err)
	}
	if err := s.Op(xseg.OpAcquire, "locked1", xseg.FlagNoSync); err != nil {
		t.Fatalf("lock after force: %v", err)
	}
}
