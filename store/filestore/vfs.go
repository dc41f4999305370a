package filestore

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vfs is the filesystem under a Store: only the calls the store makes, so
// that a test can put a filesystem that simulates power cuts under it (in
// the manner of pebble's vfs). The real one is osFS. Errors are
// *fs.PathError carrying the system error (ENOENT, EEXIST, ...), as the os
// package returns them.
type vfs interface {
	// OpenFile opens path with os.O_RDONLY, os.O_RDWR, optionally
	// os.O_CREATE|os.O_EXCL. A directory opens read-only, for Sync.
	OpenFile(path string, flag int, perm os.FileMode) (vfile, error)
	Mkdir(path string, perm os.FileMode) error
	// Unlink removes a file, never a directory.
	Unlink(path string) error
	Rename(oldpath, newpath string) error
	Link(oldpath, newpath string) error
	Stat(path string) (fs.FileInfo, error)
	// ReadDir calls fn for each entry of dir, in no particular order.
	ReadDir(dir string, fn func(fs.DirEntry) error) error
}

// vfile is an open file of a vfs. Pread, Pwrite and Same are the hot path:
// they must not allocate.
type vfile interface {
	// Name is the path the file was opened by.
	Name() string
	// Pread reads into p at off until p is full or the file ends.
	Pread(p []byte, off int64) (int, error)
	// Pwrite writes all of p at off.
	Pwrite(p []byte, off int64) error
	Truncate(size int64) error
	// Datasync is fdatasync: the data and the size are durable.
	Datasync() error
	// Sync is fsync; on a directory, its entries are durable.
	Sync() error
	Close() error
	// Same reports whether Name still names this very file: nil if so,
	// errStale if the path names another file now (replaced by a rename
	// or by a delete and a create, maybe by another process or host), an
	// error wrapping fs.ErrNotExist if nothing is there any more.
	Same() error
}

// errStale: a cached file is no longer the object of its name.
var errStale = errors.New("the file was replaced")

// copyData copies all of src into the empty dst.
func copyData(dst, src vfile) error {
	if d, ok := dst.(*osFile); ok {
		if s, ok := src.(*osFile); ok {
			// Both descriptors are fresh (offset 0): the kernel copies
			// (copy_file_range) without the data passing through here.
			_, err := d.f.ReadFrom(s.f)
			return err
		}
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		n, err := src.Pread(buf, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := dst.Pwrite(buf[:n], off); err != nil {
			return err
		}
		off += int64(n)
	}
}

// readFile returns the content of the file at path.
func readFile(fsys vfs, path string) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var data []byte
	buf := make([]byte, 512)
	for {
		n, err := f.Pread(buf, int64(len(data)))
		data = append(data, buf[:n]...)
		if err != nil || n < len(buf) {
			return data, err
		}
	}
}

// ---- the operating system's filesystem ----

// osFS is the real filesystem.
type osFS struct{}

func (osFS) OpenFile(path string, flag int, perm os.FileMode) (vfile, error) {
	f, err := os.OpenFile(path, flag|syscall.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	return newOSFile(f)
}

func newOSFile(f *os.File) (*osFile, error) {
	o := &osFile{f: f, fd: int(f.Fd()), name: f.Name()}
	var st syscall.Stat_t
	if err := syscall.Fstat(o.fd, &st); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	o.dev, o.ino = uint64(st.Dev), uint64(st.Ino)
	p, err := syscall.BytePtrFromString(filepath.Base(f.Name()))
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: f.Name(), Err: err}
	}
	o.cbase = p
	return o, nil
}

func (osFS) Mkdir(path string, perm os.FileMode) error { return os.Mkdir(path, perm) }

func (osFS) Unlink(path string) error {
	for {
		err := syscall.Unlink(path)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "unlink", Path: path, Err: err}
		}
		return nil
	}
}

func (osFS) Rename(oldpath, newpath string) error  { return os.Rename(oldpath, newpath) }
func (osFS) Link(oldpath, newpath string) error    { return os.Link(oldpath, newpath) }
func (osFS) Stat(path string) (fs.FileInfo, error) { return os.Stat(path) }

// ReadDir reads dir in batches, so that a large directory is never held
// whole.
func (osFS) ReadDir(dir string, fn func(fs.DirEntry) error) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(256)
		for _, e := range ents {
			if err := fn(e); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// osFile is an open file: the *os.File, its descriptor for the system
// calls of the hot path, and what Same needs: the device and inode, the
// last element of the path as a C string (made once, so that Same does not
// allocate) and a descriptor of the directory (opened at the first Same),
// so that the look-up is of one name, not of the whole path (about 0.7
// against 2.5 us here).
type osFile struct {
	f        *os.File
	fd       int
	name     string
	cbase    *byte
	dev, ino uint64
	dirfd    atomic.Int64 // the directory's O_PATH descriptor + 1; 0: not open
}

func (o *osFile) Name() string { return o.name }

func (o *osFile) Pread(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Pread(o.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, &fs.PathError{Op: "pread", Path: o.name, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func (o *osFile) Pwrite(p []byte, off int64) error {
	for n := 0; n < len(p); {
		m, err := syscall.Pwrite(o.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "pwrite", Path: o.name, Err: err}
		}
		if m == 0 {
			return &fs.PathError{Op: "pwrite", Path: o.name, Err: io.ErrShortWrite}
		}
		n += m
	}
	return nil
}

func (o *osFile) Truncate(size int64) error { return o.f.Truncate(size) }

func (o *osFile) Datasync() error {
	for {
		err := syscall.Fdatasync(o.fd)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "fdatasync", Path: o.name, Err: err}
		}
		return nil
	}
}

func (o *osFile) Sync() error { return o.f.Sync() }

func (o *osFile) Close() error {
	if d := o.dirfd.Swap(0); d > 0 {
		syscall.Close(int(d - 1))
	}
	return o.f.Close()
}

// dir returns the descriptor of the file's directory, opening it once.
func (o *osFile) dir() (int, error) {
	if d := o.dirfd.Load(); d > 0 {
		return int(d - 1), nil
	}
	path := filepath.Dir(o.name)
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if !o.dirfd.CompareAndSwap(0, int64(fd)+1) { // opened meanwhile
		unix.Close(fd)
		return int(o.dirfd.Load() - 1), nil
	}
	return fd, nil
}

// Same stats the name in the directory (one fstatat, no allocation) and
// compares the device and inode with the file's.
func (o *osFile) Same() error {
	dfd, err := o.dir()
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	for {
		_, _, e := syscall.Syscall6(sysFstatat, uintptr(dfd), uintptr(unsafe.Pointer(o.cbase)),
			uintptr(unsafe.Pointer(&st)), 0, 0, 0)
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return &fs.PathError{Op: "stat", Path: o.name, Err: e}
		case uint64(st.Dev) != o.dev || uint64(st.Ino) != o.ino:
			return errStale
		}
		return nil
	}
}

// openDirect opens path read-write with O_DIRECT: the one way the store
// asks for O_DIRECT (probeDirect, reopenDirect). A variable, so that a test
// can play a filesystem that refuses it (as tmpfs did before Linux 6.6,
// with EINVAL) on any kernel.
var openDirect = func(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT|syscall.O_CLOEXEC, 0)
}

// reopenDirect opens the very file again with O_DIRECT (not the path,
// which may name another file by now).
func (o *osFile) reopenDirect() (*osFile, error) {
	d, err := openDirect("/proc/self/fd/" + strconv.Itoa(o.fd))
	if err != nil {
		return nil, err
	}
	// Without cbase: Same is asked of the buffered file only.
	return &osFile{f: d, fd: int(d.Fd()), name: o.name, dev: o.dev, ino: o.ino}, nil
}
