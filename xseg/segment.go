package xseg

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
)

// ShmDir is where segments live.
const ShmDir = "/dev/shm"

// Config says how to create a segment.
type Config struct {
	Name     string // file name under ShmDir
	SizeMiB  int    // total size (SEGMENT_SIZE)
	Ports    int    // number of ports (SEGMENT_PORTS)
	DynPorts int    // first dynamic port (SEGMENT_DYNPORTS); ports below are static
	// Requests is the size of the request pool; 0 picks one request per
	// 64 KiB of segment, between 256 and 65536. Rounded up to a power of two.
	Requests int
}

// Segment is a process's mapping of a segment.
type Segment struct {
	name string
	mem  []byte
	base unsafe.Pointer
	h    *header
	pid  uint32
	// derived from the header
	nports, dynports, nreqs, units uint32
	bells                          bells  // doorbells this process rings
	ino                            uint64 // the file's inode: Unlinked tells a replaced file
}

func shmPath(name string) string { return filepath.Join(ShmDir, name) }

func validName(name string) error {
	if name == "" || len(name) > 200 || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("segment name %q: %w", name, errs.ErrInvalid)
	}
	return nil
}

func (c *Config) check() error {
	if err := validName(c.Name); err != nil {
		return err
	}
	if c.SizeMiB < 4 || c.SizeMiB > 1<<20 {
		return fmt.Errorf("segment %q: size %d MiB outside 4..%d: %w", c.Name, c.SizeMiB, 1<<20, errs.ErrInvalid)
	}
	if c.Ports < 1 || c.Ports > 65536 {
		return fmt.Errorf("segment %q: %d ports outside 1..65536: %w", c.Name, c.Ports, errs.ErrInvalid)
	}
	if c.DynPorts < 0 || c.DynPorts > c.Ports {
		return fmt.Errorf("segment %q: dynamic ports start %d outside 0..%d: %w", c.Name, c.DynPorts, c.Ports, errs.ErrInvalid)
	}
	if c.Requests < 0 || c.Requests > 1<<20 {
		return fmt.Errorf("segment %q: %d requests outside 0..%d: %w", c.Name, c.Requests, 1<<20, errs.ErrInvalid)
	}
	return nil
}

func roundUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

// Create makes a new segment, mode 0660, and maps it. It fails with
// errs.ErrExists if one of that name exists.
func Create(c Config) (*Segment, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	size := uint64(c.SizeMiB) << 20
	nreqs := uint32(c.Requests)
	if nreqs == 0 {
		nreqs = uint32(min(max(size>>16, 256), 65536))
	}
	nreqs = 1 << bits.Len32(nreqs-1)

	g, err := layoutOf(size, uint32(c.Ports), nreqs)
	if err != nil {
		return nil, fmt.Errorf("segment %q: %d MiB, %d ports, %d requests: %w", c.Name, c.SizeMiB, c.Ports, nreqs, err)
	}

	path := shmPath(c.Name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o660)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("segment %q: %w", c.Name, errs.ErrExists)
		}
		return nil, fmt.Errorf("segment %q: create %s: %w", c.Name, path, err)
	}
	defer f.Close()
	fail := func(err error) (*Segment, error) {
		os.Remove(path)
		return nil, fmt.Errorf("segment %q: %w", c.Name, err)
	}
	if err := f.Chmod(0o660); err != nil { // umask must not narrow group access
		return fail(err)
	}
	// Back every page now: a segment that tmpfs cannot hold fails here,
	// with the free space named, and not later with SIGBUS in a peer.
	if err := reserve(f, path, size); err != nil {
		return fail(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	s := newSegment(c.Name, mem)
	s.ino = inode(f)
	h := s.h
	h.version = Version
	h.size = size
	h.nports = uint32(c.Ports)
	h.dynports = uint32(c.DynPorts)
	h.nreqs = nreqs
	h.units = g.units
	h.portsOff, h.ringsOff, h.reqsOff, h.bmapOff, h.heapOff = g.portsOff, g.ringsOff, g.reqsOff, g.bmapOff, g.heapOff
	h.creator = s.pid
	h.created = time.Now().UnixNano()
	s.load()
	// The file is fresh, so all else is zero: free requests, free heap,
	// unbound ports. The magic goes in last: a joiner that sees it sees
	// the whole header.
	h.magic.Store(Magic)
	return s, nil
}

func newSegment(name string, mem []byte) *Segment {
	s := &Segment{name: name, mem: mem, base: unsafe.Pointer(&mem[0]), pid: uint32(os.Getpid())}
	s.h = (*header)(s.base)
	return s
}

func (s *Segment) load() {
	s.nports, s.dynports, s.nreqs, s.units = s.h.nports, s.h.dynports, s.h.nreqs, s.h.units
	s.bells.fds = make([]atomic.Pointer[bellFd], s.nports)
}

// Join maps an existing segment. It fails with errs.ErrNotFound when there
// is none, and errs.ErrVersion when it was made by another format version.
func Join(name string) (*Segment, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	path := shmPath(name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("segment %q (%s): %w", name, path, errs.ErrNotFound)
		}
		return nil, fmt.Errorf("segment %q: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("segment %q: %w", name, err)
	}
	if fi.Size() < headerSize {
		return nil, fmt.Errorf("segment %q: %d bytes, smaller than a header: %w", name, fi.Size(), errs.ErrCorrupt)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("segment %q: %w", name, err)
	}
	s := newSegment(name, mem)
	// A creator may still be writing the header; give it a moment.
	deadline := time.Now().Add(2 * time.Second)
	for s.h.magic.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	m := s.h.magic.Load()
	switch {
	case m != Magic:
		unix.Munmap(mem)
		return nil, fmt.Errorf("segment %q: bad magic %#x, not an Archipelago segment: %w", name, m, errs.ErrCorrupt)
	case s.h.version != Version:
		v := s.h.version
		unix.Munmap(mem)
		return nil, fmt.Errorf("segment %q: format version %d, this build speaks %d; stop every peer and recreate it: %w", name, v, Version, errs.ErrVersion)
	case s.h.size != uint64(fi.Size()):
		unix.Munmap(mem)
		return nil, fmt.Errorf("segment %q: header says %d bytes, file has %d: %w", name, s.h.size, fi.Size(), errs.ErrCorrupt)
	}
	if err := s.checkHeader(); err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	s.ino = inode(f)
	s.load()
	return s, nil
}

// Destroy removes the segment's file. Processes that have it mapped keep
// their mapping until they close it.
func Destroy(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	removeBells(name)
	if err := os.Remove(shmPath(name)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("segment %q: %w", name, errs.ErrNotFound)
		}
		return fmt.Errorf("segment %q: %w", name, err)
	}
	return nil
}

// Exists reports whether a segment file of that name is present.
func Exists(name string) bool {
	_, err := os.Stat(shmPath(name))
	return err == nil
}

// Close unmaps the segment. Ports and requests the process still holds are
// reclaimed by the others once the process exits; call Port.Release first
// to hand ports back at once.
func (s *Segment) Close() error {
	if s.mem == nil {
		return nil
	}
	s.closeBells()
	err := unix.Munmap(s.mem)
	s.mem, s.base, s.h = nil, nil, nil
	return err
}

// Name is the segment's name.
func (s *Segment) Name() string { return s.name }

// Info describes a segment's geometry and usage.
type Info struct {
	Name            string
	Size            uint64
	Ports, DynPorts int
	Requests        int
	FreeRequests    int
	HeapBytes       uint64
	HeapUsed        uint64
	Creator         int
	Created         time.Time
	Repairs         uint64 // structures rebuilt after a dead lock holder
	Reclaimed       uint64 // requests reclaimed from dead processes
}

// Info reports the segment's geometry and current usage.
func (s *Segment) Info() Info {
	free := 0
	for i := uint32(0); i < s.nreqs; i++ {
		if st, _ := unpackState(s.req(i).state.Load()); st == stFree {
			free++
		}
	}
	return Info{
		Name: s.name, Size: s.h.size, Ports: int(s.nports), DynPorts: int(s.dynports),
		Requests: int(s.nreqs), FreeRequests: free,
		HeapBytes: uint64(s.units) * UnitSize, HeapUsed: uint64(s.h.heapUsed.Load()) * UnitSize,
		Creator: int(s.h.creator), Created: time.Unix(0, s.h.created),
		Repairs: s.h.repairs.Load(), Reclaimed: s.h.reclaimed.Load(),
	}
}

func (s *Segment) at(off uint64) unsafe.Pointer { return unsafe.Add(s.base, off) }

func (s *Segment) port(no uint32) *port {
	return (*port)(s.at(s.h.portsOff + uint64(no)*portSize))
}

func (s *Segment) req(i uint32) *reqHdr {
	return (*reqHdr)(s.at(s.h.reqsOff + uint64(i)*reqSize))
}

// ring returns slot j of ring kind (0 requests, 1 replies) of port no.
func (s *Segment) ringSlot(no uint32, kind uint32, j uint32) *atomic.Uint32 {
	off := s.h.ringsOff + ((uint64(no)*2+uint64(kind))*uint64(s.nreqs)+uint64(j&(s.nreqs-1)))*4
	return (*atomic.Uint32)(s.at(off))
}

func (s *Segment) bitmapWord(i uint32) *uint64 {
	return (*uint64)(s.at(s.h.bmapOff + uint64(i)*8))
}

// Requests is the size of the request pool; request indexes are below it.
func (s *Segment) Requests() int { return int(s.nreqs) }

// geometry is where the areas of a segment start (see docs/xseg.md).
type geometry struct {
	portsOff, ringsOff, reqsOff, bmapOff, heapOff uint64
	units                                         uint32
}

// layoutOf computes the layout of a segment of size bytes with nports
// ports and nreqs requests: Create writes it into the header, Join checks
// the header against it (a damaged offset would send every process that
// maps the segment outside it).
func layoutOf(size uint64, nports, nreqs uint32) (geometry, error) {
	var g geometry
	if nports < 1 || nports > 65536 || nreqs < 1 || nreqs > 1<<20 || nreqs&(nreqs-1) != 0 {
		return g, fmt.Errorf("%d ports, %d requests: %w", nports, nreqs, errs.ErrInvalid)
	}
	g.portsOff = uint64(headerSize)
	g.ringsOff = roundUp(g.portsOff+uint64(nports)*portSize, 64)
	g.reqsOff = roundUp(g.ringsOff+uint64(nports)*2*uint64(nreqs)*4, 64)
	g.bmapOff = roundUp(g.reqsOff+uint64(nreqs)*reqSize, 64)
	if g.bmapOff >= size {
		return g, fmt.Errorf("too small for its ports and requests: %w", errs.ErrInvalid)
	}
	// The bitmap needs one bit per unit of what is left.
	units := (size - g.bmapOff) / (UnitSize + 1) // generous upper bound on units
	g.heapOff = roundUp(g.bmapOff+roundUp(units, 64)/8, UnitSize)
	if g.heapOff >= size {
		return g, fmt.Errorf("too small for its ports and requests: %w", errs.ErrInvalid)
	}
	units = (size - g.heapOff) / UnitSize
	if units < 16 || units > 1<<32-1 {
		return g, fmt.Errorf("leaves a heap of %d units: %w", units, errs.ErrInvalid)
	}
	g.units = uint32(units)
	return g, nil
}

// checkHeader verifies that the header's geometry is the one its size,
// ports and requests give.
func (s *Segment) checkHeader() error {
	h := s.h
	g, err := layoutOf(h.size, h.nports, h.nreqs)
	if err != nil {
		return fmt.Errorf("segment %q: header: %v: %w", s.name, err, errs.ErrCorrupt)
	}
	got := geometry{h.portsOff, h.ringsOff, h.reqsOff, h.bmapOff, h.heapOff, h.units}
	if got != g {
		return fmt.Errorf("segment %q: header: layout %+v, its size, %d ports and %d requests give %+v: %w", s.name, got, h.nports, h.nreqs, g, errs.ErrCorrupt)
	}
	if h.dynports > h.nports {
		return fmt.Errorf("segment %q: header: dynamic ports from %d of %d: %w", s.name, h.dynports, h.nports, errs.ErrCorrupt)
	}
	return nil
}

// reserve sizes the segment file and allocates every page of it, so that
// a filesystem too small for it fails now with errs.ErrNoSpace naming
// what is free, rather than a peer later with SIGBUS or EIO.
func reserve(f *os.File, path string, size uint64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, int64(size))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOSPC):
		var st unix.Statfs_t
		free := "an unknown amount"
		if unix.Statfs(filepath.Dir(path), &st) == nil {
			free = fmt.Sprintf("%d MiB", uint64(st.Bavail)*uint64(st.Bsize)>>20)
		}
		return fmt.Errorf("%s: the segment needs %d MiB (SEGMENT_SIZE) and %s has %s free: lower SEGMENT_SIZE or enlarge %s: %w",
			path, size>>20, filepath.Dir(path), free, filepath.Dir(path), errs.ErrNoSpace)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
		// A filesystem that cannot allocate ahead: size it only.
		if err := f.Truncate(int64(size)); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	}
	return fmt.Errorf("%s: allocating %d MiB: %w", path, size>>20, err)
}

func inode(f *os.File) uint64 {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return 0
	}
	return st.Ino
}

// Unlinked says whether the file this process mapped is no longer the
// segment's file: removed (by a cleanup script, systemd-logind's
// RemoveIPC, or xseg destroy) or replaced by another. Processes that map
// it go on talking to each other, but no new process can reach them.
// It returns "" while the file is in place, else what happened.
func (s *Segment) Unlinked() string {
	var st unix.Stat_t
	err := unix.Stat(shmPath(s.name), &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Sprintf("%s was removed", shmPath(s.name))
	case err != nil:
		return ""
	case s.ino != 0 && st.Ino != s.ino:
		return fmt.Sprintf("%s was replaced by another segment", shmPath(s.name))
	}
	return ""
}

// Path is the segment's file.
func (s *Segment) Path() string { return shmPath(s.name) }
