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
	bells                          bells // doorbells this process rings
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

	portsOff := uint64(headerSize)
	ringsOff := roundUp(portsOff+uint64(c.Ports)*portSize, 64)
	reqsOff := roundUp(ringsOff+uint64(c.Ports)*2*uint64(nreqs)*4, 64)
	bmapOff := roundUp(reqsOff+uint64(nreqs)*reqSize, 64)
	// The bitmap needs one bit per unit of what is left.
	rest := size - bmapOff
	units := rest / (UnitSize + 1) // generous upper bound on units
	heapOff := roundUp(bmapOff+roundUp(units, 64)/8, UnitSize)
	if heapOff >= size {
		return nil, fmt.Errorf("segment %q: %d MiB is too small for %d ports and %d requests: %w", c.Name, c.SizeMiB, c.Ports, nreqs, errs.ErrInvalid)
	}
	units = (size - heapOff) / UnitSize
	if units < 16 || units > 1<<32-1 {
		return nil, fmt.Errorf("segment %q: %d MiB leaves a heap of %d units: %w", c.Name, c.SizeMiB, units, errs.ErrInvalid)
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
	if err := f.Truncate(int64(size)); err != nil {
		return fail(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	s := newSegment(c.Name, mem)
	h := s.h
	h.version = Version
	h.size = size
	h.nports = uint32(c.Ports)
	h.dynports = uint32(c.DynPorts)
	h.nreqs = nreqs
	h.units = uint32(units)
	h.portsOff, h.ringsOff, h.reqsOff, h.bmapOff, h.heapOff = portsOff, ringsOff, reqsOff, bmapOff, heapOff
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
