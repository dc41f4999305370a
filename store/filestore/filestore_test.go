package filestore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// opener returns an open function for the suites that makes a store in a
// new directory with opts.
func opener(opts filestore.Options) func(t *testing.T) store.Store {
	return func(t *testing.T) store.Store {
		o := opts
		o.Dir = t.TempDir()
		s, err := filestore.Open(o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
}

func TestConformance(t *testing.T) { storetest.Run(t, opener(filestore.Options{})) }

func TestConformanceSmallCache(t *testing.T) {
	storetest.Run(t, opener(filestore.Options{FDCache: 2}))
}

// TestConformanceDirect runs the suite with O_DIRECT on a directory under
// /tmp (t.TempDir), which must take it unless it is on tmpfs of old kernels.
func TestConformanceDirect(t *testing.T) {
	probe, err := filestore.Open(filestore.Options{Dir: t.TempDir(), Direct: true})
	if errors.Is(err, errs.ErrNotSupported) {
		t.Skipf("the temporary directory refuses O_DIRECT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	storetest.Run(t, opener(filestore.Options{Direct: true, FDCache: 4}))
}

func TestLocker(t *testing.T) { storetest.RunLocker(t, opener(filestore.Options{})) }

func TestLockerOwnLockDir(t *testing.T) {
	storetest.RunLocker(t, func(t *testing.T) store.Store {
		s, err := filestore.Open(filestore.Options{Dir: t.TempDir(), LockDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func open(t *testing.T, opts filestore.Options) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestReopen checks that objects and locks outlive the Store.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, filestore.Options{Dir: dir})
	if err := s.WriteAt(ctx, "obj", []byte("persistent"), 3, false); err != nil {
		t.Fatal(err)
	}
	if err := s.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, filestore.Options{Dir: dir})
	p := make([]byte, 20)
	n, err := s.ReadAt(ctx, "obj", p, 0)
	if err != nil || string(p[:n]) != "\x00\x00\x00persistent" {
		t.Errorf("after reopen: %q, %v", p[:n], err)
	}
	if owner, err := s.LockOwner(ctx, "vol"); err != nil || owner != "host-a" {
		t.Errorf("LockOwner after reopen = %q, %v", owner, err)
	}
	var le *store.LockedError
	if err := s.TryLock(ctx, "vol", "host-b"); !errors.As(err, &le) || le.Owner != "host-a" {
		t.Errorf("TryLock by another owner after reopen = %v", err)
	}
}

// TestSharedLockDir checks that two stores sharing a lock directory see
// each other's locks.
func TestSharedLockDir(t *testing.T) {
	ctx := t.Context()
	locks := t.TempDir()
	a := open(t, filestore.Options{Dir: t.TempDir(), LockDir: locks})
	b := open(t, filestore.Options{Dir: t.TempDir(), LockDir: locks})
	if err := a.TryLock(ctx, "vol", "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.TryLock(ctx, "vol", "b"); !errors.Is(err, errs.ErrLocked) {
		t.Errorf("TryLock through the other store = %v, want ErrLocked", err)
	}
	if err := b.Unlock(ctx, "vol", "b", true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.LockOwner(ctx, "vol"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("LockOwner after a forced unlock elsewhere = %v, want ErrNotFound", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, opts := range []filestore.Options{
		{},
		{Dir: dir, FDCache: -2},
		{Dir: dir, LockDir: dir},
		{Dir: dir, LockDir: dir + "/"},
		{Dir: dir, LockDir: filepath.Join(dir, "0a")},
	} {
		if s, err := filestore.Open(opts); !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", opts, err)
			if s != nil {
				s.Close()
			}
		}
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := filestore.Open(filestore.Options{Dir: file}); !errors.Is(err, errs.ErrIO) {
		t.Errorf("Open of a file = %v, want ErrIO", err)
	}
}

func TestFormat(t *testing.T) {
	dir := t.TempDir()
	open(t, filestore.Options{Dir: dir}).Close()
	data, err := os.ReadFile(filepath.Join(dir, "FORMAT"))
	if err != nil || string(data) != "archipelago-filestore 1\n" {
		t.Fatalf("FORMAT = %q, %v", data, err)
	}
	open(t, filestore.Options{Dir: dir}).Close()
	for content, want := range map[string]error{
		"archipelago-filestore 2\n": errs.ErrVersion,
		"something else\n":          errs.ErrCorrupt,
		"":                          errs.ErrCorrupt,
	} {
		if err := os.WriteFile(filepath.Join(dir, "FORMAT"), []byte(content), 0o660); err != nil {
			t.Fatal(err)
		}
		if _, err := filestore.Open(filestore.Options{Dir: dir}); !errors.Is(err, want) {
			t.Errorf("Open with FORMAT %q = %v, want %v", content, err, want)
		}
	}
}

// TestDirectRefused: on a filesystem that refuses O_DIRECT (tmpfs did
// before Linux 6.6: EINVAL), Open with Direct fails with ErrNotSupported
// naming the directory, and the directory still opens without Direct. The
// refusal is injected (RefuseDirect), so that the test runs on any kernel.
func TestDirectRefused(t *testing.T) {
	filestore.RefuseDirect(t, syscall.EINVAL)
	dir := t.TempDir()
	s, err := filestore.Open(filestore.Options{Dir: dir, Direct: true})
	if err == nil {
		s.Close()
		t.Fatal("Open with Direct succeeded where O_DIRECT is refused")
	}
	if !errors.Is(err, errs.ErrNotSupported) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open with Direct where O_DIRECT is refused = %v; want ErrNotSupported naming %s", err, dir)
	}
	s = open(t, filestore.Options{Dir: dir})
	if err := s.WriteAt(t.Context(), "obj", []byte("data"), 0, false); err != nil {
		t.Errorf("write without Direct in %s: %v", dir, err)
	}
}

func TestCorruptLock(t *testing.T) {
	ctx := t.Context()
	s := open(t, filestore.Options{Dir: t.TempDir()})
	if err := s.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatal(err)
	}
	var path string
	filepath.WalkDir(s.LockDir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "vol" {
			path = p
		}
		return nil
	})
	if path == "" {
		t.Fatal("lock file not found")
	}
	if err := os.WriteFile(path, []byte("torn"), 0o660); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockOwner(ctx, "vol"); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("LockOwner of a corrupt lock = %v, want ErrCorrupt", err)
	}
	if err := s.TryLock(ctx, "vol", "host-a"); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("TryLock of a corrupt lock = %v, want ErrCorrupt", err)
	}
	if err := s.Unlock(ctx, "vol", "host-a", false); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("Unlock of a corrupt lock = %v, want ErrCorrupt", err)
	}
	if err := s.Unlock(ctx, "vol", "host-a", true); err != nil {
		t.Errorf("forced Unlock of a corrupt lock = %v", err)
	}
	if err := s.TryLock(ctx, "vol", "host-b"); err != nil {
		t.Errorf("TryLock after breaking a corrupt lock = %v", err)
	}
}

func TestErrorsWrapSentinels(t *testing.T) {
	ctx := t.Context()
	s := open(t, filestore.Options{Dir: t.TempDir()})
	_, err := s.ReadAt(ctx, "missing", make([]byte, 1), 0)
	if !errors.Is(err, errs.ErrNotFound) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("ReadAt of a missing object = %v; want ErrNotFound wrapping the os error, naming the object", err)
	}
	if errs.ToCode(err) != errs.CodeNotFound {
		t.Errorf("ToCode = %v", errs.ToCode(err))
	}
}

// TestShared runs two Stores on one directory, as two hosts (or two
// filed processes) sharing it, through the shared-storage suite: an object
// deleted, re-created or replaced through one is never read or written
// through a file the other still holds open from before.
func TestShared(t *testing.T) {
	for _, fdc := range []int{0, 1, filestore.NoFDCache} {
		t.Run(fmt.Sprint("fdcache=", fdc), func(t *testing.T) {
			storetest.RunShared(t, func(t *testing.T) (store.Store, store.Store) {
				dir := t.TempDir()
				a, err := filestore.Open(filestore.Options{Dir: dir})
				if err != nil {
					t.Fatal(err)
				}
				b, err := filestore.Open(filestore.Options{Dir: dir, FDCache: fdc})
				if err != nil {
					t.Fatal(err)
				}
				return a, b
			})
		})
	}
}
