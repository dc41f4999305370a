package mapdev

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/archipelago-go/archipelago/errs"
)

// MountOptions say how Mount serves a device.
type MountOptions struct {
	// Name is the file's name below the mountpoint ("device" if empty).
	Name string
	// Logger gets what goes wrong; nil discards it.
	Logger *slog.Logger
	// MaxIO is the largest READ or WRITE the kernel sends (default and
	// at most 1 MiB, the kernel's limit).
	MaxIO int
	// MaxBackground is how many asynchronous requests (the loop
	// device's direct I/O) the kernel keeps in flight (default 128).
	MaxBackground int
}

// Server is a mounted FUSE filesystem holding one regular file whose
// bytes are a Device's.
type Server struct {
	dir  string
	path string
	srv  *fuse.Server
	f    *file
	done chan struct{} // closed when the serve loop has ended
}

// Mount mounts at dir (an existing directory) a filesystem with a single
// regular file, opts.Name, of dev's size: mode 0600, or 0444 when dev is
// read-only. The file is always opened for direct I/O (no page cache);
// reads and writes at any offset run concurrently; fsync flushes dev;
// fallocate(PUNCH_HOLE or ZERO_RANGE) zeroes through Zeroer. Mounting
// needs root (or fusermount). Unmount it with Unmount.
func Mount(dir string, dev Device, opts MountOptions) (*Server, error) {
	name := opts.Name
	if name == "" {
		name = "device"
	}
	if strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return nil, fmt.Errorf("mapped file name %q: %w", name, errs.ErrInvalid)
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	maxIO := opts.MaxIO
	if maxIO <= 0 || maxIO > 1<<20 {
		maxIO = 1 << 20
	}
	bg := opts.MaxBackground
	if bg <= 0 {
		bg = 128
	}
	// The canonical path: it is what /sys/block/loopN/loop/backing_file
	// shows, so Path() compares equal to Backing().
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, err
	}
	f := &file{dev: dev, log: lg, mtime: time.Now()}
	root := &fs.Inode{}
	// The attributes change only when the device grows, and Resized
	// tells the kernel then.
	forever := 24 * time.Hour
	o := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            "archipelago:" + name,
			Name:              "archipelago",
			DirectMount:       true, // root needs no fusermount
			MaxWrite:          maxIO,
			MaxBackground:     bg,
			DisableXAttrs:     true,
			DisableSplice:     true,               // replies are in memory already; a 1 MiB one overflows a pipe
			ExtraCapabilities: fuse.CAP_ASYNC_DIO, // the loop device's I/O stays asynchronous
			Logger:            log.New(slogWriter{lg}, "", 0),
		},
		EntryTimeout: &forever,
		AttrTimeout:  &forever,
		OnAdd: func(ctx context.Context) {
			ch := root.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
			root.AddChild(name, ch, true)
		},
	}
	srv, err := fs.Mount(abs, root, o)
	if err != nil {
		return nil, fmt.Errorf("mount FUSE at %s: %w", abs, err)
	}
	s := &Server{dir: abs, path: filepath.Join(abs, name), srv: srv, f: f, done: make(chan struct{})}
	go func() { srv.Wait(); close(s.done) }()
	return s, nil
}

// Path is the mapped file.
func (s *Server) Path() string { return s.path }

// Dir is the mountpoint.
func (s *Server) Dir() string { return s.dir }

// Resized makes the kernel take the device's size anew after it grew:
// it drops the file's cached attributes (FUSE_NOTIFY_INVAL_INODE) and
// stats the file, which fetches them again and sets the kernel's inode
// size (what a loop device reads on LOOP_SET_CAPACITY). It fails if the
// file does not show the device's size then.
func (s *Server) Resized() error {
	if e := s.f.NotifyContent(-1, 0); e != 0 {
		return fmt.Errorf("invalidate the attributes of %s: %w", s.path, e)
	}
	want := s.f.dev.Size()
	st, err := os.Stat(s.path)
	if err != nil {
		return err
	}
	if uint64(st.Size()) != want {
		return fmt.Errorf("%s shows %d bytes after the device grew to %d: %w", s.path, st.Size(), want, errs.ErrIO)
	}
	return nil
}

// Done is closed once the filesystem is gone (Unmount, or an unmount from
// outside).
func (s *Server) Done() <-chan struct{} { return s.done }

// Unmount unmounts the filesystem and returns when it no longer serves.
// While the file is open (a loop device detaching lets go of it
// asynchronously) it retries; when ctx ends it detaches the mount lazily
// and keeps serving until the last user closes the file.
func (s *Server) Unmount(ctx context.Context) error {
	for {
		err := syscall.Unmount(s.dir, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			break // unmounted now, or already
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("unmount %s: %w", s.dir, err)
		}
		select {
		case <-s.done:
			return nil
		case <-time.After(20 * time.Millisecond):
			continue
		case <-ctx.Done():
		}
		if err := syscall.Unmount(s.dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("detach %s: %w", s.dir, err)
		}
		break
	}
	<-s.done
	return nil
}

// file is the mapped file's inode.
type file struct {
	fs.Inode
	dev   Device
	log   *slog.Logger
	mtime time.Time
}

var (
	_ fs.NodeGetattrer = (*file)(nil)
	_ fs.NodeSetattrer = (*file)(nil)
	_ fs.NodeOpener    = (*file)(nil)
	_ fs.NodeReader    = (*file)(nil)
	_ fs.NodeWriter    = (*file)(nil)
	_ fs.NodeWritever  = (*file)(nil)
	_ fs.NodeFsyncer   = (*file)(nil)
	_ fs.NodeFlusher   = (*file)(nil)
	_ fs.NodeAllocater = (*file)(nil)
)

func (f *file) attr(out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o600
	if f.dev.ReadOnly() {
		out.Mode = syscall.S_IFREG | 0o444
	}
	out.Size = f.dev.Size()
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	out.Nlink = 1
	out.SetTimes(nil, &f.mtime, &f.mtime)
}

func (f *file) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.attr(&out.Attr)
	return 0
}

// Setattr accepts what does not change the file (a truncate to its own
// size, times, modes) and refuses a change of size.
func (f *file) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && sz != f.dev.Size() {
		return syscall.EPERM
	}
	f.attr(&out.Attr)
	return 0
}

// Open refuses writers of a read-only device; every open is direct I/O
// (nothing cached, so the loop device and any other reader agree), and
// direct writes may run in parallel.
func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if f.dev.ReadOnly() && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

func (f *file) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := f.dev.Size()
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if uint64(off) >= size {
		return fuse.ReadResultData(nil), 0
	}
	n := min(uint64(len(dest)), size-uint64(off))
	if err := f.dev.ReadAt(ctx, dest[:n], uint64(off)); err != nil {
		f.log.Error("read", "offset", off, "len", n, "err", err)
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// span checks a write of n bytes at off and returns how many fit.
func (f *file) span(off int64, n int) (int, syscall.Errno) {
	if f.dev.ReadOnly() {
		return 0, syscall.EROFS
	}
	size := f.dev.Size()
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if uint64(off) >= size {
		if n == 0 {
			return 0, 0
		}
		return 0, syscall.ENOSPC // the file cannot grow
	}
	return int(min(uint64(n), size-uint64(off))), 0
}

func (f *file) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n, e := f.span(off, len(data))
	if e != 0 || n == 0 {
		return 0, e
	}
	if err := f.dev.WriteAt(ctx, data[:n], uint64(off), false); err != nil {
		f.log.Error("write", "offset", off, "len", n, "err", err)
		return 0, errno(err)
	}
	return uint32(n), 0
}

var joinBufs = sync.Pool{New: func() any { return new([]byte) }}

// Writev joins the pieces and writes them as one request.
func (f *file) Writev(ctx context.Context, fh fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	total := 0
	for _, d := range data {
		total += len(d)
	}
	bp := joinBufs.Get().(*[]byte)
	defer joinBufs.Put(bp)
	buf := (*bp)[:0]
	for _, d := range data {
		buf = append(buf, d...)
	}
	*bp = buf
	return f.Write(ctx, fh, buf[:total], off)
}

// Fsync makes every write answered so far durable: the loop device sends
// it for a block-layer FLUSH.
func (f *file) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	if f.dev.ReadOnly() {
		return 0
	}
	if err := f.dev.Flush(ctx); err != nil {
		f.log.Error("flush", "err", err)
		return errno(err)
	}
	return 0
}

// Flush (a close) does nothing: durability is fsync's.
func (f *file) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return 0 }

// fallocate(2) modes.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
	fallocUnshare   = 0x40
)

// Allocate serves fallocate(2): PUNCH_HOLE and ZERO_RANGE (the loop
// device's DISCARD and WRITE_ZEROES) zero through Zeroer; a plain
// allocation within the file succeeds (the space is the volume's);
// anything else is not supported.
func (f *file) Allocate(ctx context.Context, _ fs.FileHandle, off, n uint64, mode uint32) syscall.Errno {
	size := f.dev.Size()
	end := off + n
	if end < off {
		return syscall.EINVAL
	}
	switch {
	case mode&(fallocPunchHole|fallocZeroRange) != 0:
		if f.dev.ReadOnly() {
			return syscall.EROFS
		}
		z, ok := f.dev.(Zeroer)
		if !ok {
			return syscall.EOPNOTSUPP
		}
		end = min(end, size)
		if off >= end {
			return 0
		}
		if err := z.Zero(ctx, off, end-off); err != nil {
			f.log.Error("zero", "offset", off, "len", end-off, "err", err)
			return errno(err)
		}
		return 0
	case mode&^(fallocKeepSize|fallocUnshare) == 0:
		if f.dev.ReadOnly() {
			return syscall.EROFS
		}
		if end > size && mode&fallocKeepSize == 0 {
			return syscall.ENOSPC // the file cannot grow
		}
		return 0
	}
	return syscall.EOPNOTSUPP
}

// slogWriter carries go-fuse's own log lines to a slog.Logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("fuse: " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
