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
