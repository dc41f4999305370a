package mapdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

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
// bytes are a Device's. It speaks the FUSE protocol on /dev/fuse itself
// (the message layouts are go-fuse's types): a READ or WRITE is read
// from the kernel, served and answered by one goroutine, and its bytes
// go between the kernel and a buffer of the device's own (Lender: the
// segment, for Remote) with no copy in between.
type Server struct {
	dir   string
	path  string
	name  string
	dev   Device
	lend  lender // dev's buffers; nil: Go memory
	log   *slog.Logger
	mtime time.Time
	maxIO int
	bg    int
	fd    int
	fdMu  sync.RWMutex // held to write a notification; fd is closed under it
	shut  bool         // fd is closed (under fdMu)

	readers atomic.Int32 // goroutines serving /dev/fuse
	idle    atomic.Int32 // of them, waiting for a request
	wg      sync.WaitGroup
	done    chan struct{} // closed when the serve loop has ended

	bigMu sync.Mutex
	big   []buf // free buffers of maxIO bytes (the reads' buffers)
	mem   sync.Pool
}

// The readers: at most maxReaders goroutines (each one request in
// flight), and one spare waits for the next request whenever they are
// not all busy; a reader that finds spareReaders others waiting leaves.
const (
	maxReaders   = 64
	spareReaders = 2
	// keepBig is how many free maxIO buffers a Server keeps for reading.
	keepBig = 4
	// smallIO: a WRITE of up to this many bytes is copied out of the
	// read buffer into a buffer of its own size (cheap), so that the
	// large buffer serves the next read at once; a larger one is served
	// from the read buffer itself.
	smallIO = 64 << 10
)

// hdrLen is the part of a request read into a reader's own memory: the
// header and a WRITE's arguments; the payload lands in the buffer after.
const hdrLen = int(unsafe.Sizeof(fuse.WriteIn{}))

// buf is memory a request's bytes pass through: a Device's (tag says
// whose, for its return) or Go's (tag nil).
type buf struct {
	b   []byte
	tag any
}

// lender is the ability of a Device to hand out its own buffers, which
// its ReadAt and WriteAt then take without copying (Remote: segment
// buffers). lend returns nil when it has none to give.
type lender interface {
	lend(n int) ([]byte, any)
	unlend(b []byte, tag any)
	// alive reports whether a buffer with this tag is still worth keeping.
	alive(tag any) bool
}

// Mount mounts at dir (an existing directory) a filesystem with a single
// regular file, opts.Name, of dev's size: mode 0600, or 0444 when dev is
// read-only. The file is always opened for direct I/O (no page cache);
// reads and writes at any offset run concurrently; fsync flushes dev;
// fallocate(PUNCH_HOLE or ZERO_RANGE) zeroes through Zeroer. Mounting
// needs root. Unmount it with Unmount.
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
	maxIO = (maxIO + 4095) &^ 4095
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
	var st syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		return nil, fmt.Errorf("mount FUSE at %s: %w", abs, err)
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount FUSE at %s: open /dev/fuse: %w", abs, err)
	}
	s := &Server{dir: abs, path: filepath.Join(abs, name), name: name, dev: dev, log: lg, mtime: time.Now(),
		maxIO: maxIO, bg: bg, fd: fd, done: make(chan struct{})}
	s.lend, _ = dev.(lender)
	s.mem.New = func() any { b := make([]byte, maxIO); return &b }
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=%d,group_id=%d,max_read=%d",
		fd, st.Mode&syscall.S_IFMT, os.Geteuid(), os.Getegid(), maxIO)
	if err := syscall.Mount("archipelago:"+name, abs, "fuse.archipelago", syscall.MS_NOSUID|syscall.MS_NODEV, data); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("mount FUSE at %s: %w", abs, err)
	}
	if err := s.init(); err != nil {
		syscall.Unmount(abs, syscall.MNT_DETACH)
		syscall.Close(fd)
		return nil, fmt.Errorf("mount FUSE at %s: %w", abs, err)
	}
	s.spawn()
	go func() {
		s.wg.Wait()
		s.fdMu.Lock()
		s.shut = true
		syscall.Close(fd)
		s.fdMu.Unlock()
		s.dropBig()
		close(s.done)
	}()
	if err := s.noPoll(); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Unmount(ctx)
		return nil, fmt.Errorf("mount FUSE at %s: %w", abs, err)
	}
	return s, nil
}

// noPoll makes the kernel learn, before anyone else opens the file, that
// it cannot be polled: a Go program registers every file it opens with
// its poller (epoll_ctl), which asks the FUSE server (POLL) while holding
// one of the program's processors; were that program this one, with
// every processor so held, no reader would be left to answer. Adding the
// file to an epoll set here, from a system call that lets go of its
// processor, asks once; the answer ENOSYS sets the kernel's no_poll.
func (s *Server) noPoll() error {
	fd, err := syscall.Open(s.path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", s.path, err)
	}
	defer syscall.Close(fd)
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer syscall.Close(ep)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	// Not syscall.EpollCtl: a raw system call, which would keep this
	// processor (and a garbage collection waiting for it) while the
	// kernel waits for the answer.
	_, _, e := syscall.Syscall6(syscall.SYS_EPOLL_CTL, uintptr(ep), syscall.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	if e != 0 && e != syscall.EPERM {
		return fmt.Errorf("poll %s: %w", s.path, e)
	}
	return nil
}

// init answers the kernel's first request, INIT.
func (s *Server) init() error {
	b := make([]byte, s.maxIO+hdrLen+4096)
	for {
		n, err := syscall.Read(s.fd, b)
		if err == syscall.EINTR || err == syscall.ENOENT {
			continue
		}
		if err != nil {
			return fmt.Errorf("read INIT: %w", err)
		}
		if n < int(unsafe.Sizeof(fuse.InHeader{}))+8 {
			return fmt.Errorf("short INIT (%d bytes): %w", n, errs.ErrIO)
		}
		in := (*fuse.InitIn)(unsafe.Pointer(&b[0]))
		if in.Opcode != opInit {
			return fmt.Errorf("first request is opcode %d, not INIT: %w", in.Opcode, errs.ErrIO)
		}
		if in.Major != 7 || in.Minor < 28 {
			s.reply(in.Unique, syscall.EPROTO)
			return fmt.Errorf("kernel FUSE protocol %d.%d: want 7.28 or later: %w", in.Major, in.Minor, errs.ErrNotSupported)
		}
		want := uint32(fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_MAX_PAGES |
			fuse.CAP_ASYNC_DIO) // the loop device's I/O stays asynchronous
		out := fuse.InitOut{
			Major:               7,
			Minor:               min(in.Minor, 28),
			MaxReadAhead:        in.MaxReadAhead,
			Flags:               in.Flags & want,
			MaxBackground:       uint16(s.bg),
			CongestionThreshold: uint16(s.bg * 3 / 4),
			MaxWrite:            uint32(s.maxIO),
			TimeGran:            1,
			MaxPages:            uint16(s.maxIO / 4096),
		}
		return s.reply(in.Unique, 0, asBytes(&out))
	}
}

// FUSE opcodes served (linux/fuse.h).
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFsync       = 20
	opFlush       = 25
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opFsyncdir    = 30
	opAccess      = 34
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
	opFallocate   = 43

	notifyInvalInode = 2
)

// The inodes: the mountpoint and the file.
const (
	rootIno = 1
	fileIno = 2
)

// spawn starts one more reader.
func (s *Server) spawn() {
	s.readers.Add(1)
	s.wg.Add(1)
	go s.reader()
}

// reader reads requests from /dev/fuse and serves each itself, until
// the filesystem is gone.
func (s *Server) reader() {
	defer s.wg.Done()
	defer s.readers.Add(-1)
	var hdr [hdrLen]byte
	var b buf
	defer func() {
		if b.b != nil {
			s.putBig(b)
		}
	}()
	for {
		if b.b == nil {
			b = s.getBig()
		}
		s.idle.Add(1)
		n, err := readv(s.fd, hdr[:], b.b)
		s.idle.Add(-1)
		if err != nil {
			switch err {
			case syscall.EINTR, syscall.EAGAIN, syscall.ENOENT: // ENOENT: the request was interrupted
				continue
			case syscall.ENODEV: // unmounted
			default:
				s.log.Error("fuse: read /dev/fuse", "err", err)
			}
			return
		}
		if s.idle.Load() == 0 && s.readers.Load() < maxReaders {
			s.spawn()
		}
		if n < int(unsafe.Sizeof(fuse.InHeader{})) {
			s.log.Error("fuse: short request", "bytes", n)
			continue
		}
		b = s.serve(hdr[:], b, n)
		if s.idle.Load() >= spareReaders && s.readers.Load() > 1 {
			return
		}
	}
}

// getBig returns a buffer of maxIO bytes to read a request into: the
// device's if it lends, else Go memory.
func (s *Server) getBig() buf {
	s.bigMu.Lock()
	for len(s.big) > 0 {
		b := s.big[len(s.big)-1]
		s.big = s.big[:len(s.big)-1]
		if b.tag == nil || s.lend.alive(b.tag) {
			s.bigMu.Unlock()
			return b
		}
		s.bigMu.Unlock()
		s.lend.unlend(b.b, b.tag)
		s.bigMu.Lock()
	}
	s.bigMu.Unlock()
	return s.get(s.maxIO)
}

// putBig keeps a read buffer for the next reader, or returns it.
func (s *Server) putBig(b buf) {
	s.bigMu.Lock()
	if len(s.big) < keepBig {
		s.big = append(s.big, b)
		s.bigMu.Unlock()
		return
	}
	s.bigMu.Unlock()
	s.put(b)
}

// dropBig returns the kept read buffers.
func (s *Server) dropBig() {
	s.bigMu.Lock()
	big := s.big
	s.big = nil
	s.bigMu.Unlock()
	for _, b := range big {
		s.put(b)
	}
}

// get returns a buffer of n <= maxIO bytes.
func (s *Server) get(n int) buf {
	if s.lend != nil {
		if p, tag := s.lend.lend(n); p != nil {
			return buf{p[:n], tag}
		}
	}
	p := s.mem.Get().(*[]byte)
	return buf{(*p)[:n], nil}
}

// put returns a buffer from get.
func (s *Server) put(b buf) {
	if b.tag != nil {
		s.lend.unlend(b.b, b.tag)
		return
	}
	p := b.b[:cap(b.b)]
	s.mem.Put(&p)
}

// serve answers one request of n bytes, read into hdr and then b (the
// reader's buffer), and returns the buffer the reader reads into next
// (b, or nothing when b went with the request).
func (s *Server) serve(hdr []byte, b buf, n int) buf {
	h := (*fuse.InHeader)(unsafe.Pointer(&hdr[0]))
	switch h.Opcode {
	case opRead:
		if n < hdrLen {
			s.reply(h.Unique, syscall.EINVAL)
			return b
		}
		s.read((*fuse.ReadIn)(unsafe.Pointer(&hdr[0])), b)
		return b
	case opWrite:
		if n < hdrLen {
			s.reply(h.Unique, syscall.EINVAL)
			return b
		}
		return s.write((*fuse.WriteIn)(unsafe.Pointer(&hdr[0])), b, n-hdrLen)
	}
	// Anything else: its arguments in one piece.
	msg := make([]byte, n)
	k := copy(msg, hdr[:min(n, hdrLen)])
	copy(msg[k:], b.b[:n-k])
	s.other(msg)
	return b
}

// ctx is what the requests run under: the kernel does not interrupt a
// loop device's requests, and a request from elsewhere ends when its
// answer comes.
var ctx = context.Background()

func (s *Server) read(in *fuse.ReadIn, b buf) {
	size := s.dev.Size()
	off := in.Offset
	if off >= size {
		s.reply(in.Unique, 0)
		return
	}
	n := int(min(uint64(in.Size), size-off, uint64(s.maxIO)))
	p := b
	if n <= smallIO && b.tag != nil {
		// A buffer of the request's own size: b stays the reader's,
		// with no buffer of maxIO bytes held while this one waits.
		p = s.get(n)
		defer s.put(p)
	}
	if err := s.dev.ReadAt(ctx, p.b[:n], off); err != nil {
		s.log.Error("read", "offset", off, "len", n, "err", err)
		s.reply(in.Unique, errno(err))
		return
	}
	s.reply(in.Unique, 0, p.b[:n])
}

// write serves a WRITE whose k bytes of payload are at the start of b.
func (s *Server) write(in *fuse.WriteIn, b buf, k int) buf {
	if k < int(in.Size) {
		s.reply(in.Unique, syscall.EINVAL)
		return b
	}
	n, e := s.span(in.Offset, int(in.Size))
	if e != 0 || n == 0 {
		s.reply(in.Unique, e)
		return b
	}
	p := b
	if n <= smallIO && b.tag != nil {
		p = s.get(n)
		copy(p.b, b.b[:n])
		defer s.put(p)
	}
	if err := s.dev.WriteAt(ctx, p.b[:n], in.Offset, false); err != nil {
		s.log.Error("write", "offset", in.Offset, "len", n, "err", err)
		s.reply(in.Unique, errno(err))
		return b
	}
	out := fuse.WriteOut{Size: uint32(n)}
	s.reply(in.Unique, 0, asBytes(&out))
	return b
}

// span checks a write of n bytes at off and returns how many fit.
func (s *Server) span(off uint64, n int) (int, syscall.Errno) {
	if s.dev.ReadOnly() {
		return 0, syscall.EROFS
	}
	size := s.dev.Size()
	if off >= size {
		if n == 0 {
			return 0, 0
		}
		return 0, syscall.ENOSPC // the file cannot grow
	}
	return int(min(uint64(n), size-off)), 0
}

// other serves the requests besides READ and WRITE; msg is the whole
// request.
func (s *Server) other(msg []byte) {
	h := (*fuse.InHeader)(unsafe.Pointer(&msg[0]))
	arg := msg[unsafe.Sizeof(fuse.InHeader{}):]
	// ok: the request holds the arguments of size bytes.
	ok := func(size uintptr) bool { return uintptr(len(msg)) >= size }
	switch h.Opcode {
	case opForget, opBatchForget, opInterrupt:
		// No answer: the inodes are there for good, and a request runs
		// to its end.
	case opLookup:
		name := strings.TrimRight(string(arg), "\x00")
		if h.NodeId != rootIno || name != s.name {
			s.reply(h.Unique, syscall.ENOENT)
			return
		}
		var out fuse.EntryOut
		out.NodeId, out.Generation = fileIno, 1
		out.SetEntryTimeout(24 * time.Hour)
		out.SetAttrTimeout(24 * time.Hour)
		s.attr(fileIno, &out.Attr)
		s.reply(h.Unique, 0, asBytes(&out))
	case opGetattr:
		var out fuse.AttrOut
		out.SetTimeout(24 * time.Hour) // Resized drops them when the device grows
		if !s.attr(h.NodeId, &out.Attr) {
			s.reply(h.Unique, syscall.ENOENT)
			return
		}
		s.reply(h.Unique, 0, asBytes(&out))
	case opSetattr:
		if !ok(unsafe.Sizeof(fuse.SetAttrIn{})) {
			s.reply(h.Unique, syscall.EINVAL)
			return
		}
		in := (*fuse.SetAttrIn)(unsafe.Pointer(&msg[0]))
		// Whatever does not change the file (a truncate to its own
		// size, times, modes) is accepted; a change of size is not.
		if in.Valid&fuse.FATTR_SIZE != 0 && (h.NodeId != fileIno || in.Size != s.dev.Size()) {
			s.reply(h.Unique, syscall.EPERM)
			return
		}
		var out fuse.AttrOut
		out.SetTimeout(24 * time.Hour)
		if !s.attr(h.NodeId, &out.Attr) {
			s.reply(h.Unique, syscall.ENOENT)
			return
		}
		s.reply(h.Unique, 0, asBytes(&out))
	case opOpen:
		if !ok(unsafe.Sizeof(fuse.OpenIn{})) {
			s.reply(h.Unique, syscall.EINVAL)
			return
		}
		in := (*fuse.OpenIn)(unsafe.Pointer(&msg[0]))
		if h.NodeId != fileIno {
			s.reply(h.Unique, syscall.EISDIR)
			return
		}
		// Writers of a read-only device are refused; every open is
		// direct I/O (nothing cached, so the loop device and any other
		// reader agree), and direct writes may run in parallel.
		if s.dev.ReadOnly() && in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
			s.reply(h.Unique, syscall.EROFS)
			return
		}
		out := fuse.OpenOut{OpenFlags: fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES}
		s.reply(h.Unique, 0, asBytes(&out))
	case opOpendir:
		if h.NodeId != rootIno {
			s.reply(h.Unique, syscall.ENOTDIR)
			return
		}
		var out fuse.OpenOut
		s.reply(h.Unique, 0, asBytes(&out))
	case opReaddir:
		if !ok(unsafe.Sizeof(fuse.ReadIn{})) {
			s.reply(h.Unique, syscall.EINVAL)
			return
		}
		in := (*fuse.ReadIn)(unsafe.Pointer(&msg[0]))
		s.reply(h.Unique, 0, s.readdir(in.Offset, int(in.Size)))
	case opRelease, opReleasedir, opFlush, opFsyncdir, opAccess, opDestroy:
		// Flush (a close) does nothing: durability is fsync's.
		s.reply(h.Unique, 0)
	case opFsync:
		// Every write answered so far becomes durable: the loop device
		// sends it for a block-layer FLUSH.
		if !s.dev.ReadOnly() {
			if err := s.dev.Flush(ctx); err != nil {
				s.log.Error("flush", "err", err)
				s.reply(h.Unique, errno(err))
				return
			}
		}
		s.reply(h.Unique, 0)
	case opFallocate:
		if !ok(unsafe.Sizeof(fuse.FallocateIn{})) {
			s.reply(h.Unique, syscall.EINVAL)
			return
		}
		in := (*fuse.FallocateIn)(unsafe.Pointer(&msg[0]))
		s.reply(h.Unique, s.allocate(in.Offset, in.Length, in.Mode))
	case opStatfs:
		out := fuse.StatfsOut{Bsize: 4096, Frsize: 4096, NameLen: 255, Files: 2,
			Blocks: (s.dev.Size() + 4095) / 4096}
		s.reply(h.Unique, 0, asBytes(&out))
	default:
		s.reply(h.Unique, syscall.ENOSYS)
	}
}

// attr fills the attributes of inode ino; false if there is no such inode.
func (s *Server) attr(ino uint64, out *fuse.Attr) bool {
	switch ino {
	case rootIno:
		out.Ino = rootIno
		out.Mode = syscall.S_IFDIR | 0o755
		out.Nlink = 2
	case fileIno:
		out.Ino = fileIno
		out.Mode = syscall.S_IFREG | 0o600
		if s.dev.ReadOnly() {
			out.Mode = syscall.S_IFREG | 0o444
		}
		out.Size = s.dev.Size()
		out.Blocks = (out.Size + 511) / 512
		out.Nlink = 1
	default:
		return false
	}
	out.Blksize = 4096
	out.Owner = fuse.Owner{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	out.SetTimes(nil, &s.mtime, &s.mtime)
	return true
}

// dirent is struct fuse_dirent without its name.
type dirent struct {
	Ino     uint64
	Off     uint64
	NameLen uint32
	Typ     uint32
}

// readdir returns the directory's entries after offset off, at most
// size bytes of them.
func (s *Server) readdir(off uint64, size int) []byte {
	ents := []struct {
		ino  uint64
		typ  uint32
		name string
	}{{rootIno, syscall.DT_DIR, "."}, {rootIno, syscall.DT_DIR, ".."}, {fileIno, syscall.DT_REG, s.name}}
	var out []byte
	for i := int(off); i < len(ents); i++ {
		e := ents[i]
		d := dirent{Ino: e.ino, Off: uint64(i + 1), NameLen: uint32(len(e.name)), Typ: e.typ}
		rec := append(append([]byte(nil), asBytes(&d)...), e.name...)
		for len(rec)%8 != 0 {
			rec = append(rec, 0)
		}
		if len(out)+len(rec) > size {
			break
		}
		out = append(out, rec...)
	}
	return out
}

// fallocate(2) modes.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
	fallocUnshare   = 0x40
)

// allocate serves fallocate(2): PUNCH_HOLE and ZERO_RANGE (the loop
// device's DISCARD and WRITE_ZEROES) zero through Zeroer; a plain
// allocation within the file succeeds (the space is the volume's);
// anything else is not supported.
func (s *Server) allocate(off, n uint64, mode uint32) syscall.Errno {
	size := s.dev.Size()
	end := off + n
	if end < off {
		return syscall.EINVAL
	}
	switch {
	case mode&(fallocPunchHole|fallocZeroRange) != 0:
		if s.dev.ReadOnly() {
			return syscall.EROFS
		}
		z, ok := s.dev.(Zeroer)
		if !ok {
			return syscall.EOPNOTSUPP
		}
		end = min(end, size)
		if off >= end {
			return 0
		}
		if err := z.Zero(ctx, off, end-off); err != nil {
			s.log.Error("zero", "offset", off, "len", end-off, "err", err)
			return errno(err)
		}
		return 0
	case mode&^(fallocKeepSize|fallocUnshare) == 0:
		if s.dev.ReadOnly() {
			return syscall.EROFS
		}
		if end > size && mode&fallocKeepSize == 0 {
			return syscall.ENOSPC // the file cannot grow
		}
		return 0
	}
	return syscall.EOPNOTSUPP
}

// reply answers request unique: an error, or success with data.
func (s *Server) reply(unique uint64, e syscall.Errno, data ...[]byte) error {
	var h fuse.OutHeader
	h.Unique = unique
	h.Status = -int32(e)
	h.Length = uint32(unsafe.Sizeof(h))
	if e != 0 {
		data = nil
	}
	var d []byte
	switch len(data) {
	case 0:
	case 1:
		d = data[0]
	default:
		panic("mapdev: reply of several pieces")
	}
	h.Length += uint32(len(d))
	if _, err := writev(s.fd, asBytes(&h), d); err != nil && err != syscall.ENOENT {
		// ENOENT: the request was interrupted and is gone.
		s.log.Warn("fuse: answer", "err", err)
		return err
	}
	return nil
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
	h := fuse.OutHeader{Status: notifyInvalInode}
	in := fuse.NotifyInvalInodeOut{Ino: fileIno, Off: -1}
	h.Length = uint32(unsafe.Sizeof(h) + unsafe.Sizeof(in))
	s.fdMu.RLock()
	var err error = syscall.ENODEV
	if !s.shut {
		_, err = writev(s.fd, asBytes(&h), asBytes(&in))
	}
	s.fdMu.RUnlock()
	if err != nil {
		return fmt.Errorf("invalidate the attributes of %s: %w", s.path, err)
	}
	want := s.dev.Size()
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

// asBytes is the memory of *v.
func asBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// readv reads one request into a, then b.
func readv(fd int, a, b []byte) (int, error) {
	iov := [2]unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	n, _, e := syscall.Syscall(syscall.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), 2)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// writev writes one answer: a, then b (which may be empty).
func writev(fd int, a, b []byte) (int, error) {
	iov := [2]unix.Iovec{{Base: &a[0]}}
	iov[0].SetLen(len(a))
	k := 1
	if len(b) > 0 {
		iov[1].Base = &b[0]
		iov[1].SetLen(len(b))
		k = 2
	}
	for {
		n, _, e := syscall.Syscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}
