package filestore

import (
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// crashFS is an in-memory vfs that simulates power cuts, in the manner of
// pebble's vfs.NewCrashableMem: it tracks what is durable. A file's data
// and size are durable as of its last fdatasync or fsync; a directory's
// entries (names and the files or directories they link) as of its last
// fsync. Crash returns a new crashFS that holds only what was durable: a
// file reached through durable entries, with its durable data; nothing
// else. It is the least a real filesystem keeps, so a store that is
// durable on it relies on nothing the system calls do not promise.
type crashFS struct {
	mu   sync.Mutex
	root *memNode
}

// memNode is an inode: a directory or a regular file.
type memNode struct {
	dir bool
	// directory
	entries, durEntries map[string]*memNode
	// file
	data, durData []byte
	nlink         int
	mtime         time.Time
}

func newDirNode() *memNode {
	return &memNode{dir: true, entries: map[string]*memNode{}, durEntries: map[string]*memNode{}, mtime: time.Now()}
}

func newCrashFS() *crashFS { return &crashFS{root: newDirNode()} }

// Crash returns what survives a power cut now. c stays usable.
func (c *crashFS) Crash() *crashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	copies := map[*memNode]*memNode{} // hard links stay one inode
	var cp func(n *memNode) *memNode
	cp = func(n *memNode) *memNode {
		if m := copies[n]; m != nil {
			return m
		}
		var m *memNode
		if n.dir {
			m = newDirNode()
			copies[n] = m
			for name, child := range n.durEntries {
				cc := cp(child)
				m.entries[name], m.durEntries[name] = cc, cc
				if !cc.dir {
					cc.nlink++
				}
			}
		} else {
			m = &memNode{data: slices.Clone(n.durData), durData: slices.Clone(n.durData), mtime: n.mtime}
			copies[n] = m
		}
		return m
	}
	return &crashFS{root: cp(c.root)}
}

func pathErr(op, p string, err syscall.Errno) error { return &fs.PathError{Op: op, Path: p, Err: err} }

// lookup returns the node at p (absolute, clean) or nil. Caller holds mu.
func (c *crashFS) lookup(p string) *memNode {
	n := c.root
	for _, part := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		if part == "" {
			continue
		}
		if !n.dir {
			return nil
		}
		if n = n.entries[part]; n == nil {
			return nil
		}
	}
	return n
}

// parent returns the directory holding p and p's last element.
func (c *crashFS) parent(op, p string) (*memNode, string, error) {
	dir, base := path.Split(path.Clean(p))
	d := c.lookup(dir)
	switch {
	case d == nil:
		return nil, "", pathErr(op, p, syscall.ENOENT)
	case !d.dir:
		return nil, "", pathErr(op, p, syscall.ENOTDIR)
	}
	return d, base, nil
}

func (c *crashFS) OpenFile(p string, flag int, perm os.FileMode) (vfile, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lookup(p)
	if n == nil && flag&os.O_CREATE != 0 {
		d, base, err := c.parent("open", p)
		if err != nil {
			return nil, err
		}
		n = &memNode{nlink: 1, mtime: time.Now()}
		d.entries[base] = n
		return &memFile{fs: c, n: n, name: p}, nil
	}
	switch {
	case n != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", p, syscall.EEXIST)
	case n == nil:
		return nil, pathErr("open", p, syscall.ENOENT)
	case n.dir && flag&(os.O_RDWR|os.O_WRONLY) != 0:
		return nil, pathErr("open", p, syscall.EISDIR)
	}
	return &memFile{fs: c, n: n, name: p}, nil
}

func (c *crashFS) Mkdir(p string, perm os.FileMode) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, base, err := c.parent("mkdir", p)
	if err != nil {
		return err
	}
	if d.entries[base] != nil {
		return pathErr("mkdir", p, syscall.EEXIST)
	}
	d.entries[base] = newDirNode()
	return nil
}

func (c *crashFS) Unlink(p string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, base, err := c.parent("unlink", p)
	if err != nil {
		return err
	}
	n := d.entries[base]
	switch {
	case n == nil:
		return pathErr("unlink", p, syscall.ENOENT)
	case n.dir:
		return pathErr("unlink", p, syscall.EISDIR)
	}
	delete(d.entries, base)
	n.nlink--
	return nil
}

func (c *crashFS) Rename(oldpath, newpath string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	od, ob, err := c.parent("rename", oldpath)
	if err != nil {
		return err
	}
	nd, nb, err := c.parent("rename", newpath)
	if err != nil {
		return err
	}
	n := od.entries[ob]
	if n == nil {
		return pathErr("rename", oldpath, syscall.ENOENT)
	}
	if old := nd.entries[nb]; old != nil {
		if old.dir != n.dir {
			return pathErr("rename", newpath, syscall.EISDIR)
		}
		if old != n && !old.dir {
			old.nlink--
		}
	}
	delete(od.entries, ob)
	nd.entries[nb] = n
	return nil
}

func (c *crashFS) Link(oldpath, newpath string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	od, ob, err := c.parent("link", oldpath)
	if err != nil {
		return err
	}
	nd, nb, err := c.parent("link", newpath)
	if err != nil {
		return err
	}
	n := od.entries[ob]
	switch {
	case n == nil:
		return pathErr("link", oldpath, syscall.ENOENT)
	case n.dir:
		return pathErr("link", oldpath, syscall.EPERM)
	case nd.entries[nb] != nil:
		return pathErr("link", newpath, syscall.EEXIST)
	}
	nd.entries[nb] = n
	n.nlink++
	return nil
}

func (c *crashFS) Stat(p string) (fs.FileInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lookup(p)
	if n == nil {
		return nil, pathErr("stat", p, syscall.ENOENT)
	}
	return memInfo{name: path.Base(p), size: int64(len(n.data)), dir: n.dir, mtime: n.mtime}, nil
}

func (c *crashFS) ReadDir(dir string, fn func(fs.DirEntry) error) error {
	c.mu.Lock()
	d := c.lookup(dir)
	if d == nil || !d.dir {
		c.mu.Unlock()
		return pathErr("open", dir, syscall.ENOENT)
	}
	var ents []fs.DirEntry
	for name, n := range d.entries {
		ents = append(ents, fs.FileInfoToDirEntry(memInfo{name: name, size: int64(len(n.data)), dir: n.dir, mtime: n.mtime}))
	}
	c.mu.Unlock()
	for _, e := range ents {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

type memInfo struct {
	name  string
	size  int64
	dir   bool
	mtime time.Time
}

func (i memInfo) Name() string { return i.name }
func (i memInfo) Size() int64  { return i.size }
func (i memInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | dirPerm
	}
	return filePerm
}
func (i memInfo) ModTime() time.Time { return i.mtime }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }

// memFile is an open file (or directory) of a crashFS.
type memFile struct {
	fs     *crashFS
	n      *memNode
	name   string
	closed bool
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) Pread(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.n.dir {
		return 0, pathErr("pread", f.name, syscall.EISDIR)
	}
	if off >= int64(len(f.n.data)) {
		return 0, nil
	}
	return copy(p, f.n.data[off:]), nil
}

func (f *memFile) Pwrite(p []byte, off int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.n.dir {
		return pathErr("pwrite", f.name, syscall.EISDIR)
	}
	if end := int(off) + len(p); end > len(f.n.data) {
		f.n.data = append(f.n.data, make([]byte, end-len(f.n.data))...)
	}
	copy(f.n.data[off:], p)
	f.n.mtime = time.Now()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if int(size) <= len(f.n.data) {
		f.n.data = f.n.data[:size:size]
	} else {
		f.n.data = append(f.n.data, make([]byte, int(size)-len(f.n.data))...)
	}
	return nil
}

func (f *memFile) Datasync() error { return f.Sync() }

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.n.dir {
		clear(f.n.durEntries)
		for name, n := range f.n.entries {
			f.n.durEntries[name] = n
		}
	} else {
		f.n.durData = slices.Clone(f.n.data)
	}
	return nil
}

func (f *memFile) Close() error {
	f.closed = true
	return nil
}

// Same checks that the path still leads to this node.
func (f *memFile) Same() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	switch n := f.fs.lookup(f.name); {
	case n == nil:
		return pathErr("stat", f.name, syscall.ENOENT)
	case n != f.n:
		return errStale
	}
	return nil
}
