package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// DefaultFDCache is the number of objects kept open when Options.FDCache is 0.
const DefaultFDCache = 64

// NoFDCache as Options.FDCache keeps no object open between operations:
// each opens and closes its file (concurrent operations on one object
// share one open).
const NoFDCache = -1

const (
	dirPerm  = 0o770
	filePerm = 0o660
	tmpName  = "tmp" // Dir/tmp and LockDir/tmp
)

var (
	_ store.Store  = (*Store)(nil)
	_ store.Locker = (*Store)(nil)
)

// Options configure Open.
type Options struct {
	// Dir holds the objects; Open creates it if needed.
	Dir string
	// LockDir holds the locks; default Dir/locks. It must not be Dir.
	LockDir string
	// FDCache is the most objects kept open at once (each holds one file
	// descriptor, two with Direct); 0 means DefaultFDCache, NoFDCache
	// none.
	FDCache int
	// Direct uses O_DIRECT for I/O aligned to DirectAlign.
	Direct bool
}

// Store keeps one file per object under a directory. See the package
// documentation for the layout and the durability rules.
type Store struct {
	fs                 vfs
	dir, lockDir       string
	tmpDir, lockTmpDir string
	direct             bool

	closed atomic.Bool
	files  *fileCache

	// syncMu serializes Sync, so that a Sync never returns while an
	// earlier one still flushes what it took from the dirty sets.
	syncMu sync.Mutex
	// syncErr is the first failure of an fdatasync or fsync of Sync;
	// guarded by syncMu.
	syncErr error

	// dirtyMu guards dirtyFiles: the objects written or truncated since
	// the Sync that last took them.
	dirtyMu    sync.Mutex
	dirtyFiles map[string]struct{}

	// dirsMu guards dirs (every directory this Store changed) and
	// dirtyDirs (those changed since the Sync that last took them).
	//
	// Lock order: syncMu or unlockMu (never both), then a dirState's mu
	// (held across its fsync). dirsMu, dirtyMu and the file cache's mu
	// are leaves: nothing is taken, and no I/O done, while one is held.
	dirsMu    sync.Mutex
	dirs      map[string]*dirState
	dirtyDirs map[string]*dirState

	// unlockMu serializes Unlock's read, check and unlink.
	unlockMu sync.Mutex

	// seq orders opens and directory fsyncs (see dirState.syncedAfter).
	seq atomic.Uint64

	stats stats
	// fault, if set by a test, is called before each fdatasync and
	// directory fsync; an error it returns stands for the call's failure.
	fault func(op, path string) error
}

// stats count system calls for tests.
type stats struct {
	fileSyncs atomic.Int64 // fdatasyncs of objects
	dirSyncs  atomic.Int64 // fsyncs of directories
	directIO  atomic.Int64 // preads and pwrites through O_DIRECT descriptors
	opens     atomic.Int64 // objects opened into the cache
}

// staleOpens returns how many cached files were found replaced or deleted
// by others and dropped.
func (s *Store) staleOpens() int64 { return s.files.stale.Load() }

var errClosed = fmt.Errorf("store closed: %w", errs.ErrShutdown)

// Open opens, creating if needed, the store in opts.Dir.
func Open(opts Options) (*Store, error) { return openFS(osFS{}, opts) }

// openFS is Open on the filesystem fsys.
func openFS(fsys vfs, opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("filestore: no directory: %w", errs.ErrInvalid)
	}
	switch {
	case opts.FDCache == NoFDCache:
		opts.FDCache = 0
	case opts.FDCache < 0:
		return nil, fmt.Errorf("filestore: FDCache %d < 0 (NoFDCache is %d): %w", opts.FDCache, NoFDCache, errs.ErrInvalid)
	case opts.FDCache == 0:
		opts.FDCache = DefaultFDCache
	}
	if _, ok := fsys.(osFS); opts.Direct && !ok {
		return nil, fmt.Errorf("filestore: directory %s: Direct on a simulated filesystem: %w", opts.Dir, errs.ErrNotSupported)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("filestore: directory %s: %w: %w", opts.Dir, errs.ErrInvalid, err)
	}
	lockDir := filepath.Join(dir, "locks")
	if opts.LockDir != "" {
		if lockDir, err = filepath.Abs(opts.LockDir); err != nil {
			return nil, fmt.Errorf("filestore: lock directory %s: %w: %w", opts.LockDir, errs.ErrInvalid, err)
		}
	}
	if lockDir == dir || filepath.Dir(lockDir) == dir && isSpreadName(filepath.Base(lockDir)) {
		return nil, fmt.Errorf("filestore: lock directory %s would mix locks with the objects of %s: %w",
			lockDir, dir, errs.ErrInvalid)
	}
	s := &Store{
		fs:         fsys,
		dir:        dir,
		lockDir:    lockDir,
		tmpDir:     filepath.Join(dir, tmpName),
		lockTmpDir: filepath.Join(lockDir, tmpName),
		direct:     opts.Direct,
		dirtyFiles: make(map[string]struct{}),
		dirs:       make(map[string]*dirState),
		dirtyDirs:  make(map[string]*dirState),
	}
	s.files = newFileCache(opts.FDCache, s.openObject)
	for _, d := range []string{s.tmpDir, s.lockTmpDir} {
		if err := mkdirDurable(s.fs, d); err != nil {
			return nil, fmt.Errorf("filestore: open: %w", ioErr(err))
		}
	}
	if s.direct {
		if err := probeDirect(s.tmpDir); err != nil {
			return nil, fmt.Errorf("filestore: directory %s refuses O_DIRECT (Options.Direct): %w", dir, err)
		}
	}
	if err := s.checkFormat(); err != nil {
		return nil, err
	}
	for _, d := range []string{s.tmpDir, s.lockTmpDir} {
		if err := cleanTemp(s.fs, d); err != nil {
			return nil, fmt.Errorf("filestore: open: %w", ioErr(err))
		}
	}
	return s, nil
}

// Dir returns the absolute directory of the objects.
func (s *Store) Dir() string { return s.dir }

// LockDir returns the absolute directory of the locks.
func (s *Store) LockDir() string { return s.lockDir }

// begin checks ctx, name and that s is open.
func (s *Store) begin(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filestore: %s %q: %w", op, name, err)
	}
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("filestore: %s: %w", op, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("filestore: %s %q: %w", op, name, errClosed)
	}
	return nil
}

// ReadAt implements store.Store.
func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := s.begin(ctx, "read", name); err != nil {
		return 0, err
	}
	if err := store.ValidRange(off, len(p)); err != nil {
		return 0, fmt.Errorf("filestore: read object %q: %w", name, err)
	}
	e, err := s.files.acquire(name, false)
	if err != nil {
		return 0, opErr("read", name, err)
	}
	defer s.files.release(e)
	n, err := s.pread(e.h, p, off)
	if err != nil {
		return n, opErr("read", name, err)
	}
	return n, nil
}

// WriteAt implements store.Store.
func (s *Store) WriteAt(ctx context.Context, name string, p []byte, off int64, fua bool) error {
	if err := s.begin(ctx, "write", name); err != nil {
		return err
	}
	if err := store.ValidRange(off, len(p)); err != nil {
		return fmt.Errorf("filestore: write object %q: %w", name, err)
	}
	e, err := s.files.acquire(name, true)
	if err != nil {
		return opErr("write", name, err)
	}
	defer s.files.release(e)
	if err := s.pwrite(e.h, p, off); err != nil {
		return opErr("write", name, err)
	}
	if !fua {
		s.fileChanged(name)
		return nil
	}
	if err := s.fdatasync(e.h.f); err != nil {
		return opErr("write", name, err)
	}
	if err := s.syncPath(s.place(s.dir, name), e.h.seen); err != nil {
		return opErr("write", name, err)
	}
	return nil
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := s.begin(ctx, "stat", name); err != nil {
		return 0, err
	}
	fi, err := s.fs.Stat(s.place(s.dir, name).file)
	if err != nil {
		return 0, opErr("stat", name, err)
	}
	return fi.Size(), nil
}

// Truncate implements store.Store.
func (s *Store) Truncate(ctx context.Context, name string, size int64) error {
	if err := s.begin(ctx, "truncate", name); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("filestore: truncate object %q to %d: %w", name, size, errs.ErrInvalid)
	}
	e, err := s.files.acquire(name, false)
	if err != nil {
		return opErr("truncate", name, err)
	}
	defer s.files.release(e)
	if err := e.h.f.Truncate(size); err != nil {
		return opErr("truncate", name, err)
	}
	s.fileChanged(name)
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.begin(ctx, "delete", name); err != nil {
		return err
	}
	pl := s.place(s.dir, name)
	if err := s.fs.Unlink(pl.file); err != nil {
		return opErr("delete", name, err)
	}
	// After the unlink, not before: a file opened between the two would
	// otherwise stay cached for a name that no longer has it.
	s.files.invalidate(name)
	s.dirChanged(pl.leaf)
	return nil
}

// Copy implements store.Store.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	if err := store.ValidName(dst); err != nil {
		return fmt.Errorf("filestore: copy to: %w", err)
	}
	if err := s.begin(ctx, "copy", src); err != nil {
		return err
	}
	sp, dp := s.place(s.dir, src), s.place(s.dir, dst)
	if src == dst {
		if _, err := s.fs.Stat(sp.file); err != nil {
			return opErr("copy", src, err)
		}
		return nil
	}
	// A descriptor of its own, so that the copy may use the file offset
	// (and copy_file_range) without disturbing cached descriptors.
	in, err := s.fs.OpenFile(sp.file, os.O_RDONLY, 0)
	if err != nil {
		return opErr("copy", src, err)
	}
	defer in.Close()
	tmp, err := createTemp(s.fs, s.tmpDir)
	if err != nil {
		return opErr("copy", dst, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			s.fs.Unlink(tmp.Name())
		}
	}()
	if err := copyData(tmp, in); err != nil {
		return opErr("copy", dst, err)
	}
	_, err = s.fs.Stat(dp.file)
	replacing := err == nil
	if replacing {
		if err := s.fdatasync(tmp); err != nil {
			return opErr("copy", dst, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return opErr("copy", dst, err)
	}
	err = s.fs.Rename(tmp.Name(), dp.file)
	if errors.Is(err, fs.ErrNotExist) {
		if err = s.makeLeaf(dp); err == nil {
			err = s.fs.Rename(tmp.Name(), dp.file)
		}
	}
	if err != nil {
		return opErr("copy", dst, err)
	}
	renamed = true
	s.files.invalidate(dst)
	s.dirChanged(dp.leaf)
	if !replacing {
		s.fileChanged(dst)
	}
	return nil
}

// Sync implements store.Store.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filestore: sync: %w", err)
	}
	if s.closed.Load() {
		return fmt.Errorf("filestore: sync: %w", errClosed)
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncErr != nil {
		return s.syncErr
	}

	s.dirtyMu.Lock()
	names := s.dirtyFiles
	s.dirtyFiles = make(map[string]struct{})
	s.dirtyMu.Unlock()
	s.dirsMu.Lock()
	dirs := s.dirtyDirs
	s.dirtyDirs = make(map[string]*dirState)
	s.dirsMu.Unlock()

	var err error
	for name := range names {
		if err == nil {
			if err = ctx.Err(); err == nil {
				err = s.syncFile(name)
			}
		}
		if err != nil { // leave it for the next Sync
			s.fileChanged(name)
		}
	}
	for _, d := range dirs {
		if err == nil {
			if err = ctx.Err(); err == nil {
				err = s.syncDir(d, 0)
			}
		}
		if err != nil {
			s.dirsMu.Lock()
			s.dirtyDirs[d.path] = d
			s.dirsMu.Unlock()
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, errs.ErrShutdown):
		return fmt.Errorf("filestore: sync: %w", err)
	default:
		s.syncErr = fmt.Errorf("filestore: sync failed, the store must be reopened: %w", ioErr(err))
		return s.syncErr
	}
}

// syncFile fdatasyncs object name if it still exists.
func (s *Store) syncFile(name string) error {
	e, err := s.files.acquire(name, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // deleted since; the directory sync covers that
	}
	if err != nil {
		return fmt.Errorf("object %q: %w", name, err)
	}
	defer s.files.release(e)
	if err := s.fdatasync(e.h.f); err != nil {
		return fmt.Errorf("object %q: %w", name, err)
	}
	// The object may exist in directory entries that this Store did not
	// make and so will not sync below.
	if err := s.syncPath(s.place(s.dir, name), e.h.seen); err != nil {
		return fmt.Errorf("object %q: %w", name, err)
	}
	return nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(name string) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filestore: list %q: %w", prefix, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("filestore: list %q: %w", prefix, errClosed)
	}
	return s.walkSpread(ctx, s.dir, func(name string) error {
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		return fn(name)
	})
}

// walkSpread calls fn for every file in the AA/BB directories under root.
// An error of fn comes back as it is; others are wrapped.
func (s *Store) walkSpread(ctx context.Context, root string, fn func(name string) error) error {
	err := s.readDir(root, func(mid fs.DirEntry) error {
		if !mid.IsDir() || !isSpreadName(mid.Name()) {
			return nil
		}
		midPath := filepath.Join(root, mid.Name())
		return s.readDir(midPath, func(leaf fs.DirEntry) error {
			if !leaf.IsDir() || !isSpreadName(leaf.Name()) {
				return nil
			}
			return s.readDir(filepath.Join(midPath, leaf.Name()), func(obj fs.DirEntry) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				if !obj.Type().IsRegular() {
					return nil
				}
				if err := fn(obj.Name()); err != nil {
					return &callbackError{err}
				}
				return nil
			})
		})
	})
	var ce *callbackError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return ce.err
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("filestore: list: %w", err)
	default:
		return fmt.Errorf("filestore: list: %w", ioErr(err))
	}
}

// callbackError carries an error of List's fn through the walk untouched.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// readDir calls fn for each entry of dir. A directory removed meanwhile
// reads as empty.
func (s *Store) readDir(dir string, fn func(fs.DirEntry) error) error {
	err := s.fs.ReadDir(dir, fn)
	if errors.Is(err, fs.ErrNotExist) {
		var ce *callbackError
		if !errors.As(err, &ce) {
			return nil
		}
	}
	return err
}

// Close implements store.Store. It closes the cached files (a file in use
// closes when its user is done) and does not Sync.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.files.close()
	return nil
}
