package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

func openTest(t *testing.T, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestLayout checks where objects and locks land on disk.
func TestLayout(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	for _, name := range []string{"a", "vol1_0000000000000001", ".x", "tmp"} {
		if err := s.WriteAt(ctx, name, []byte("x"), 0, false); err != nil {
			t.Fatal(err)
		}
		if err := s.TryLock(ctx, name, "me"); err != nil {
			t.Fatal(err)
		}
		h := fnv.New32a()
		h.Write([]byte(name))
		sum := h.Sum32()
		rel := filepath.Join(fmt.Sprintf("%02x", sum>>24), fmt.Sprintf("%02x", sum>>16&0xff), name)
		for _, root := range []string{s.Dir(), s.LockDir()} {
			fi, err := os.Lstat(filepath.Join(root, rel))
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s: %v, %v; want a regular file", filepath.Join(root, rel), fi, err)
				continue
			}
			if fi.Mode().Perm()&0o007 != 0 {
				t.Errorf("%s: mode %v opens it to others", rel, fi.Mode())
			}
			di, err := os.Stat(filepath.Dir(filepath.Join(root, rel)))
			if err != nil || di.Mode().Perm()&0o007 != 0 {
				t.Errorf("directory of %s: %v, %v", rel, di, err)
			}
		}
	}
	if s.LockDir() != filepath.Join(s.Dir(), "locks") {
		t.Errorf("default LockDir = %s", s.LockDir())
	}
}

// TestSyncCounts checks that Sync fdatasyncs exactly the objects changed
// since the last Sync, including those the cache closed meanwhile, and
// fsyncs the directories whose entries changed.
func TestSyncCounts(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{FDCache: 2})
	counts := func() (files, dirs int64) { return s.stats.fileSyncs.Load(), s.stats.dirSyncs.Load() }
	sync := func() (files, dirs int64) {
		t.Helper()
		f0, d0 := counts()
		if err := s.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		f1, d1 := counts()
		return f1 - f0, d1 - d0
	}

	for i := range 10 {
		if err := s.WriteAt(ctx, fmt.Sprint("obj", i), []byte("data"), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.files.size(); n > 2 {
		t.Errorf("%d objects open, more than FDCache 2", n)
	}
	if f, d := counts(); f != 0 || d != 0 {
		t.Errorf("plain writes synced %d files and %d directories", f, d)
	}
	if f, d := sync(); f != 10 || d < 10 {
		t.Errorf("first Sync: %d fdatasyncs, %d directory fsyncs; want 10 and at least 10 (leaf and parents)", f, d)
	}
	if f, d := sync(); f != 0 || d != 0 {
		t.Errorf("Sync with nothing dirty: %d fdatasyncs, %d directory fsyncs", f, d)
	}

	// A FUA write of a new object syncs it and its directories itself.
	f0, d0 := counts()
	if err := s.WriteAt(ctx, "fua", []byte("data"), 0, true); err != nil {
		t.Fatal(err)
	}
	if f, d := counts(); f-f0 != 1 || d-d0 < 1 {
		t.Errorf("FUA write of a new object: %d fdatasyncs, %d directory fsyncs", f-f0, d-d0)
	}
	if f, d := sync(); f != 0 || d != 0 {
		t.Errorf("Sync after a FUA write: %d fdatasyncs, %d directory fsyncs", f, d)
	}
	// A FUA write of an existing object that the cache closed and opens
	// again fsyncs its directory once (the Store cannot tell who made the
	// entry it found, and whether it is durable); then no more. Which
	// objects Sync left cached depends on map order: close obj1 here.
	s.files.invalidate("obj1")
	f0, d0 = counts()
	if err := s.WriteAt(ctx, "obj1", []byte("more"), 4, true); err != nil {
		t.Fatal(err)
	}
	if f, d := counts(); f-f0 != 1 || d-d0 != 1 {
		t.Errorf("FUA write of an old object opened again: %d fdatasyncs, %d directory fsyncs; want 1, 1", f-f0, d-d0)
	}
	f0, d0 = counts()
	if err := s.WriteAt(ctx, "obj1", []byte("again"), 4, true); err != nil {
		t.Fatal(err)
	}
	if f, d := counts(); f-f0 != 1 || d-d0 != 0 {
		t.Errorf("FUA write of an old object open already: %d fdatasyncs, %d directory fsyncs; want 1, 0", f-f0, d-d0)
	}

	// The same for a Sync of an object opened again (by Truncate).
	if err := s.Truncate(ctx, "obj2", 1); err != nil {
		t.Fatal(err)
	}
	if f, d := sync(); f != 1 || d != 1 {
		t.Errorf("Sync after Truncate: %d fdatasyncs, %d directory fsyncs; want 1, 1", f, d)
	}
	if err := s.Truncate(ctx, "obj2", 2); err != nil {
		t.Fatal(err)
	}
	if f, d := sync(); f != 1 || d != 0 {
		t.Errorf("Sync after another Truncate: %d fdatasyncs, %d directory fsyncs; want 1, 0", f, d)
	}
	if err := s.Delete(ctx, "obj3"); err != nil {
		t.Fatal(err)
	}
	if f, d := sync(); f != 0 || d != 1 {
		t.Errorf("Sync after Delete: %d fdatasyncs, %d directory fsyncs; want 0, 1", f, d)
	}
	// A copy to a new object leaves its data to Sync; a copy over an
	// object flushes it before the rename.
	if err := s.Copy(ctx, "obj4", "copy"); err != nil {
		t.Fatal(err)
	}
	if f, d := sync(); f != 1 || d < 1 {
		t.Errorf("Sync after Copy to a new object: %d fdatasyncs, %d directory fsyncs", f, d)
	}
	f0, _ = counts()
	if err := s.Copy(ctx, "obj5", "copy"); err != nil {
		t.Fatal(err)
	}
	if f, _ := counts(); f-f0 != 1 {
		t.Errorf("Copy over an object: %d fdatasyncs, want 1", f-f0)
	}
	if f, d := sync(); f != 0 || d != 1 {
		t.Errorf("Sync after Copy over an object: %d fdatasyncs, %d directory fsyncs; want 0, 1", f, d)
	}
	// A write, then a delete: the delete's directory, no file.
	if err := s.WriteAt(ctx, "obj6", []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "obj6"); err != nil {
		t.Fatal(err)
	}
	if f, d := sync(); f != 0 || d != 1 {
		t.Errorf("Sync after write and delete: %d fdatasyncs, %d directory fsyncs; want 0, 1", f, d)
	}
}

// TestDirectIO checks that aligned I/O goes through O_DIRECT and the rest
// through the page cache, with the same results.
func TestDirectIO(t *testing.T) {
	ctx := t.Context()
	s, err := Open(Options{Dir: t.TempDir(), Direct: true})
	if err != nil {
		t.Skipf("the temporary directory refuses O_DIRECT: %v", err)
	}
	defer s.Close()
	direct := func() int64 { return s.stats.directIO.Load() }

	want := make([]byte, 5*DirectAlign+100)
	buf := alignedBuffer(2 * DirectAlign)
	for i := range buf {
		buf[i] = byte(i%251 + 1)
	}
	if err := s.WriteAt(ctx, "obj", buf, DirectAlign, true); err != nil {
		t.Fatal(err)
	}
	copy(want[DirectAlign:], buf)
	if direct() != 1 {
		t.Errorf("aligned write: %d direct I/Os, want 1", direct())
	}
	// Unaligned: offset, length, address.
	for _, w := range []struct {
		p   []byte
		off int64
	}{
		{buf[:DirectAlign], 1},
		{buf[:100], 3 * DirectAlign},
		{buf[1 : DirectAlign+1], 4 * DirectAlign},
		{bytes.Repeat([]byte{7}, 100), 5 * DirectAlign},
	} {
		if err := s.WriteAt(ctx, "obj", w.p, w.off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[w.off:], w.p)
	}
	if direct() != 1 {
		t.Errorf("unaligned writes went direct: %d direct I/Os", direct())
	}
	// An aligned read that runs past the end: direct, then buffered.
	read := alignedBuffer(8 * DirectAlign)
	n, err := s.ReadAt(ctx, "obj", read, 0)
	if err != nil || n != len(want) || !bytes.Equal(read[:n], want) {
		t.Fatalf("aligned read: n=%d (want %d), err=%v, equal=%v", n, len(want), err, bytes.Equal(read[:n], want))
	}
	if direct() != 2 {
		t.Errorf("aligned read: %d direct I/Os in all, want 2", direct())
	}
	// An unaligned read sees what the direct write wrote.
	small := make([]byte, 10)
	if n, err := s.ReadAt(ctx, "obj", small, DirectAlign+5); err != nil || n != 10 || !bytes.Equal(small, want[DirectAlign+5:][:10]) {
		t.Errorf("unaligned read: %d, %v", n, err)
	}
	// A buffered write then a direct read of the same range.
	if err := s.WriteAt(ctx, "obj", bytes.Repeat([]byte{9}, 10), 2*DirectAlign+7, false); err != nil {
		t.Fatal(err)
	}
	copy(want[2*DirectAlign+7:], bytes.Repeat([]byte{9}, 10))
	read = alignedBuffer(DirectAlign)
	if n, err := s.ReadAt(ctx, "obj", read, 2*DirectAlign); err != nil || n != DirectAlign || !bytes.Equal(read, want[2*DirectAlign:3*DirectAlign]) {
		t.Errorf("direct read after a buffered write: %d, %v", n, err)
	}
	if direct() != 3 {
		t.Errorf("%d direct I/Os in all, want 3", direct())
	}
}

// TestCacheChurn runs many goroutines over more objects than the cache
// holds, with deletes and copies invalidating entries; run with -race.
func TestCacheChurn(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{FDCache: 3})
	var mu sync.Mutex // guards model
	model := make(map[string][]byte)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				// One writer per object keeps the model exact.
				name := fmt.Sprintf("o%02d", g)
				switch r.IntN(5) {
				case 0, 1:
					p := []byte(fmt.Sprint(r.Uint64()))
					if err := s.WriteAt(ctx, name, p, 0, r.IntN(4) == 0); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					m := model[name]
					if len(m) < len(p) {
						m = append(m, make([]byte, len(p)-len(m))...)
					}
					copy(m, p)
					model[name] = m
					mu.Unlock()
				case 2:
					if err := s.Delete(ctx, name); err == nil {
						mu.Lock()
						delete(model, name)
						mu.Unlock()
					}
				case 3:
					if err := s.Copy(ctx, name, name+".c"); err != nil {
						continue
					}
					mu.Lock()
					data := bytes.Clone(model[name])
					mu.Unlock()
					got := make([]byte, 64)
					n, err := s.ReadAt(ctx, name+".c", got, 0)
					if err != nil || !bytes.Equal(got[:n], data) {
						t.Errorf("copy of %s: %q, %v; want %q", name, got[:n], err, data)
						return
					}
				case 4:
					if err := s.Sync(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if n := s.files.size(); n > 3 {
		t.Errorf("%d objects cached after the churn, more than 3", n)
	}
	for name, want := range model {
		got := make([]byte, 64)
		n, err := s.ReadAt(ctx, name, got, 0)
		if err != nil || !bytes.Equal(got[:n], want) {
			t.Errorf("%s: %q, %v; want %q", name, got[:n], err, want)
		}
	}
}

// TestCleanTemp checks that Open removes stale temporary files only.
func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	openTest(t, Options{Dir: dir}).Close()
	stale := filepath.Join(dir, tmpName, "stale")
	fresh := filepath.Join(dir, "locks", tmpName, "fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o660); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * tempMaxAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	openTest(t, Options{Dir: dir})
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file: %v, want removed", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file: %v, want kept", err)
	}
}

// TestSyncFailureSticks checks that after a failed fdatasync every Sync
// fails, while FUA writes, which flush their own data, still work.
func TestSyncFailureSticks(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	var failing atomic.Bool
	s.fault = func(op, path string) error {
		if failing.Load() && op == "fdatasync" {
			return syscall.EIO
		}
		return nil
	}
	if err := s.WriteAt(ctx, "obj", []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	err := s.Sync(ctx)
	if !errors.Is(err, errs.ErrIO) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync with a failing fdatasync = %v, want ErrIO wrapping EIO", err)
	}
	failing.Store(false)
	if err := s.Sync(ctx); !errors.Is(err, errs.ErrIO) {
		t.Errorf("Sync after a failed Sync = %v, want the same failure", err)
	}
	if err := s.WriteAt(ctx, "obj", []byte("y"), 0, true); err != nil {
		t.Errorf("FUA write after a failed Sync = %v", err)
	}
}

// TestDirSyncFailure checks that a failed directory fsync fails the FUA
// write that needed it and is retried by the next write.
func TestDirSyncFailure(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	var failing atomic.Bool
	s.fault = func(op, path string) error {
		if failing.Load() && op == "fsync" {
			return syscall.ENOSPC
		}
		return nil
	}
	failing.Store(true)
	err := s.WriteAt(ctx, "obj", []byte("x"), 0, true)
	if !errors.Is(err, errs.ErrNoSpace) {
		t.Fatalf("FUA write with a failing directory fsync = %v, want ErrNoSpace", err)
	}
	failing.Store(false)
	d0 := s.stats.dirSyncs.Load()
	if err := s.WriteAt(ctx, "obj", []byte("x"), 0, true); err != nil {
		t.Fatal(err)
	}
	if d := s.stats.dirSyncs.Load() - d0; d < 1 {
		t.Errorf("the retried FUA write fsynced %d directories, want the failed ones again", d)
	}
}

// TestNoFDLeak checks that the cache keeps at most FDCache objects open and
// that Close leaves no descriptor behind.
func TestNoFDLeak(t *testing.T) {
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("cannot count descriptors: %v", err)
		}
		return len(ents)
	}
	ctx := t.Context()
	before := countFDs()
	s, err := Open(Options{Dir: t.TempDir(), FDCache: 4, Direct: true})
	if err != nil {
		s, err = Open(Options{Dir: t.TempDir(), FDCache: 4})
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		name := fmt.Sprint("obj", i)
		if err := s.WriteAt(ctx, name, []byte("x"), 0, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Copy(ctx, name, name+".c"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	perObject := 2 // the file and its directory (for the check that the path still names it)
	if s.direct {
		perObject = 3
	}
	if open := countFDs() - before; open > 4*perObject {
		t.Errorf("%d descriptors open with FDCache 4", open)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after := countFDs(); after != before {
		t.Errorf("%d descriptors before Open, %d after Close", before, after)
	}
}

// TestHotPathAllocs checks that a read and a write of a cached object
// allocate nothing: not the filesystem interface, not the check that the
// file is still the object's, not the cache's bookkeeping.
func TestHotPathAllocs(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	p := make([]byte, 4096)
	if err := s.WriteAt(ctx, "obj", p, 0, false); err != nil {
		t.Fatal(err)
	}
	read := testing.AllocsPerRun(100, func() {
		if _, err := s.ReadAt(ctx, "obj", p, 0); err != nil {
			t.Fatal(err)
		}
	})
	write := testing.AllocsPerRun(100, func() {
		if err := s.WriteAt(ctx, "obj", p, 0, false); err != nil {
			t.Fatal(err)
		}
	})
	if read != 0 || write != 0 {
		t.Errorf("allocations per ReadAt %v, per WriteAt %v; want 0", read, write)
	}
}
