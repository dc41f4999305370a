package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

const (
	formatFile    = "FORMAT"
	formatMagic   = "archipelago-filestore"
	formatVersion = 1
	tempMaxAge    = time.Hour
)

// placement is where an object or lock lives: root/AA/BB/name.
type placement struct {
	root, mid, leaf, file string
}

const hexDigits = "0123456789abcdef"

// place spreads name under root by the first two bytes of its 32-bit FNV-1a
// hash.
func (s *Store) place(root, name string) placement {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	a := string([]byte{hexDigits[h>>28], hexDigits[h>>24&0xf]})
	b := string([]byte{hexDigits[h>>20&0xf], hexDigits[h>>16&0xf]})
	mid := root + "/" + a
	leaf := mid + "/" + b
	return placement{root: root, mid: mid, leaf: leaf, file: leaf + "/" + name}
}

// isSpreadName reports whether a directory entry is an AA or BB level.
func isSpreadName(name string) bool {
	return len(name) == 2 && strings.IndexByte(hexDigits, name[0]) >= 0 && strings.IndexByte(hexDigits, name[1]) >= 0
}

// makeLeaf makes the AA and BB directories of p, recording each parent whose
// entries changed.
func (s *Store) makeLeaf(p placement) error {
	for _, d := range [...]struct{ parent, dir string }{{p.root, p.mid}, {p.mid, p.leaf}} {
		err := s.fs.Mkdir(d.dir, dirPerm)
		switch {
		case err == nil:
			s.dirChanged(d.parent)
		case !errors.Is(err, fs.ErrExist):
			return err
		}
	}
	return nil
}

// openObject opens (with create, creating) the file of object name for the
// cache.
func (s *Store) openObject(name string, create bool) (*handle, error) {
	p := s.place(s.dir, name)
	f, err := s.openFile(p, create)
	if err != nil {
		return nil, err
	}
	// After the open: the file and its directories exist now.
	h := &handle{f: f, seen: s.seq.Add(1)}
	if s.direct {
		// Reopen the very file, not the path, which may have changed
		// (Open allows Direct on the real filesystem only).
		d, err := f.(*osFile).reopenDirect()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reopen %s with O_DIRECT: %w", p.file, err)
		}
		h.d = d
	}
	s.stats.opens.Add(1)
	return h, nil
}

func (s *Store) openFile(p placement, create bool) (vfile, error) {
	for range 10 {
		f, err := s.fs.OpenFile(p.file, os.O_RDWR, 0)
		if err == nil || !create || !errors.Is(err, fs.ErrNotExist) {
			return f, err
		}
		f, err = s.fs.OpenFile(p.file, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
		switch {
		case err == nil:
			// Recorded before anyone can see the file as open, so a
			// FUA write through it finds the directory to fsync.
			s.dirChanged(p.leaf)
			return f, nil
		case errors.Is(err, fs.ErrNotExist):
			if err := s.makeLeaf(p); err != nil {
				return nil, err
			}
		case errors.Is(err, fs.ErrExist):
			// Created meanwhile: open it.
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("create %s: raced with deletes too often", p.file)
}

// dirState tracks the durability of a directory's entries with generations:
// gen counts changes, synced is the gen that the last successful fsync
// covered. Changes this Store did not make (another process's or host's,
// or its own before a restart) have no generation: for them syncedAfter
// tells which entries the last fsync covered, those that existed when it
// started (Store.seq then).
type dirState struct {
	path string
	gen  atomic.Uint64 // bumped after each change of the entries
	// pathDurable (of a leaf directory): the entries that lead to it, in
	// its parent and grandparent, are durable. Directories are never
	// removed, so it stays true.
	pathDurable atomic.Bool

	mu          sync.Mutex // held across the fsync
	synced      uint64     // guarded by mu
	syncedAfter uint64     // guarded by mu
}

// dirChanged records a change (create, delete, rename) of the entries of
// directory path, after it happened.
func (s *Store) dirChanged(path string) {
	s.dirsMu.Lock()
	d := s.dirs[path]
	if d == nil {
		d = &dirState{path: path}
		s.dirs[path] = d
	}
	d.gen.Add(1)
	s.dirtyDirs[path] = d
	s.dirsMu.Unlock()
}

// fileChanged records a write or truncate of object name, after it happened.
func (s *Store) fileChanged(name string) {
	s.dirtyMu.Lock()
	s.dirtyFiles[name] = struct{}{}
	s.dirtyMu.Unlock()
}

// syncDir fsyncs d if it changed since its last fsync, or if seen is not
// 0 and its last fsync started before Store.seq was seen: so that an entry
// seen to exist then, whoever made it, is durable. A caller that finds an
// fsync in flight waits for it, so a change recorded before the call is
// durable when syncDir returns nil.
func (s *Store) syncDir(d *dirState, seen uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	gen := d.gen.Load()
	if gen == d.synced && (seen == 0 || d.syncedAfter > seen) {
		return nil
	}
	start := s.seq.Add(1)
	if s.fault != nil {
		if err := s.fault("fsync", d.path); err != nil {
			return &fs.PathError{Op: "fsync", Path: d.path, Err: err}
		}
	}
	if err := fsyncPath(s.fs, d.path); err != nil {
		return err
	}
	d.synced, d.syncedAfter = gen, start
	s.stats.dirSyncs.Add(1)
	return nil
}

// syncDirs syncs each of the directories that this Store changed.
func (s *Store) syncDirs(paths ...string) error {
	for _, path := range paths {
		s.dirsMu.Lock()
		d := s.dirs[path]
		s.dirsMu.Unlock()
		if d == nil {
			continue
		}
		if err := s.syncDir(d, 0); err != nil {
			return err
		}
	}
	return nil
}

// syncPath makes the entries that lead to the file of p durable: its own
// in the leaf directory and the leaf's and its parent's, all of which
// existed when Store.seq was seen (whoever made them: this Store, another
// process or host, or this process before a restart, which may all have
// left them unsynced). It costs a leaf fsync once per open of the file (not
// again while the open file stays cached), and fsyncs of the leaf's
// parents once per leaf and process.
func (s *Store) syncPath(p placement, seen uint64) error {
	leaf := s.dirState(p.leaf)
	if err := s.syncDir(leaf, seen); err != nil {
		return err
	}
	if leaf.pathDurable.Load() {
		// Changes of this Store's own to the parents are synced by
		// Sync: they are not on this path.
		return nil
	}
	for _, path := range []string{p.mid, p.root} {
		if err := s.syncDir(s.dirState(path), seen); err != nil {
			return err
		}
	}
	leaf.pathDurable.Store(true)
	return nil
}

// dirState returns the state of directory path, making it if needed.
func (s *Store) dirState(path string) *dirState {
	s.dirsMu.Lock()
	defer s.dirsMu.Unlock()
	d := s.dirs[path]
	if d == nil {
		d = &dirState{path: path}
		s.dirs[path] = d
	}
	return d
}

// fsyncPath fsyncs a directory (or file) by path.
func fsyncPath(fsys vfs, path string) error {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// mkdirDurable makes dir and its missing parents, and fsyncs the parent of
// each directory it made.
func mkdirDurable(fsys vfs, dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := fsys.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := fsys.Mkdir(missing[i], dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := fsyncPath(fsys, filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// createTemp creates a new file in dir.
func createTemp(fsys vfs, dir string) (vfile, error) {
	for range 100 {
		path := filepath.Join(dir, strconv.FormatUint(rand.Uint64(), 36))
		f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("create a temporary file in %s: too many collisions", dir)
}

// cleanTemp removes the files in dir older than tempMaxAge: leftovers of a
// crash, not files of a copy or lock in flight.
func cleanTemp(fsys vfs, dir string) error {
	return fsys.ReadDir(dir, func(e fs.DirEntry) error {
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if time.Since(fi.ModTime()) > tempMaxAge {
			if err := fsys.Unlink(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}

// checkFormat checks Dir/FORMAT, writing it into a new store.
func (s *Store) checkFormat() error {
	path := filepath.Join(s.dir, formatFile)
	want := fmt.Sprintf("%s %d\n", formatMagic, formatVersion)
	data, err := readFile(s.fs, path)
	switch {
	case err == nil && string(data) == want:
		return nil
	case err == nil:
		var v int
		if n, _ := fmt.Sscanf(string(data), formatMagic+" %d\n", &v); n == 1 {
			return fmt.Errorf("filestore: %s: format version %d, this is version %d: %w",
				s.dir, v, formatVersion, errs.ErrVersion)
		}
		return fmt.Errorf("filestore: %s holds %.40q, not a filestore format: %w", path, data, errs.ErrCorrupt)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("filestore: open: %w", ioErr(err))
	}
	// A new store: write the file whole, then rename it in place.
	tmp, err := createTemp(s.fs, s.tmpDir)
	if err != nil {
		return fmt.Errorf("filestore: open: %w", ioErr(err))
	}
	defer s.fs.Unlink(tmp.Name())
	err = tmp.Pwrite([]byte(want), 0)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.fs.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = fsyncPath(s.fs, s.dir)
	}
	if err != nil {
		return fmt.Errorf("filestore: open: write %s: %w", path, ioErr(err))
	}
	return nil
}
