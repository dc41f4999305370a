package filestore

import (
	"fmt"
	"testing"

	"github.com/archipelago-go/archipelago/store/storetest"
)

// crashStore is a Store on a crashFS, for storetest.RunCrash.
type crashStore struct {
	*Store
	fs   *crashFS
	opts Options
}

// Crash opens a new Store on what survives a power cut of s's filesystem.
func (s *crashStore) Crash() *crashStore {
	c := s.fs.Crash()
	st, err := openFS(c, s.opts)
	if err != nil {
		panic(fmt.Sprintf("open the store after a crash: %v", err))
	}
	return &crashStore{Store: st, fs: c, opts: s.opts}
}

// Restart opens a new Store on s's filesystem as it is, without a crash.
func (s *crashStore) Restart() *crashStore {
	s.Close()
	st, err := openFS(s.fs, s.opts)
	if err != nil {
		panic(fmt.Sprintf("open the store after a restart: %v", err))
	}
	return &crashStore{Store: st, fs: s.fs, opts: s.opts}
}

// TestCrashTwoStores: an object created through one Store (not synced
// yet) and written through another with FUA, or written and synced, must
// survive a crash: the second Store cannot know that the object's
// directory entry is not durable, so it must make it so.
func TestCrashTwoStores(t *testing.T) {
	ctx := t.Context()
	fsys := newCrashFS()
	a, err := openFS(fsys, Options{Dir: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := openFS(fsys, Options{Dir: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range []string{"fua", "synced"} {
		if err := a.WriteAt(ctx, name, []byte("created by a"), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WriteAt(ctx, "fua", []byte("B"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAt(ctx, "synced", []byte("B"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := openFS(fsys.Crash(), Options{Dir: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"fua", "synced"} {
		p := make([]byte, 1)
		if n, err := c.ReadAt(ctx, name, p, 0); err != nil || n != 1 || p[0] != 'B' {
			t.Errorf("%s after the crash: %q, %v; want B's write", name, p[:n], err)
		}
	}
}

func openCrash(opts Options) func(*testing.T) *crashStore {
	return func(t *testing.T) *crashStore {
		c := newCrashFS()
		st, err := openFS(c, opts)
		if err != nil {
			t.Fatalf("Open on a crashFS: %v", err)
		}
		return &crashStore{Store: st, fs: c, opts: opts}
	}
}

// TestCrash runs the crash suite that memstore passes against the file
// store on a filesystem that keeps, at a crash, only what was fsynced.
func TestCrash(t *testing.T) {
	storetest.RunCrash(t, openCrash(Options{Dir: "/data"}))
}

func TestCrashSmallCache(t *testing.T) {
	storetest.RunCrash(t, openCrash(Options{Dir: "/data", FDCache: 1}))
}

func TestCrashNoCache(t *testing.T) {
	storetest.RunCrash(t, openCrash(Options{Dir: "/data", FDCache: NoFDCache}))
}

func TestCrashOwnLockDir(t *testing.T) {
	storetest.RunCrash(t, openCrash(Options{Dir: "/srv/data", LockDir: "/srv/locks"}))
}
