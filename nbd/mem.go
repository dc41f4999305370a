package nbd

import (
	"context"
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/archipelago-go/archipelago/errs"
)

// memPage is the allocation unit of MemBackend exports.
const memPage = 4096

// MemBackend is a Backend of in-memory exports, for tests and as a
// reference implementation of every optional ability. Exports are sparse:
// only pages written hold memory, and pages never written (or trimmed) are
// reported as holes. Every handle of an export shares its data, and Flush
// has nothing to do, so multi-conn holds trivially.
type MemBackend struct {
	mu    sync.Mutex
	disks map[string]*memDisk
}

// MemOptions are the settings of one MemBackend export.
type MemOptions struct {
	ReadOnly    bool
	Description string
	// MinBlock is the minimum block size advertised and enforced (a power
	// of two up to 64 KiB; 0 means 1).
	MinBlock uint32
}

type memDisk struct {
	size uint64
	opts MemOptions

	mu    sync.RWMutex // guards pages and opts.ReadOnly
	pages map[uint64]*[memPage]byte
}

// memExport is a handle; ro is the export's read-only state at Open.
type memExport struct {
	d  *memDisk
	ro bool
}

var (
	_ Backend      = (*MemBackend)(nil)
	_ Export       = (*memExport)(nil)
	_ Trimmer      = (*memExport)(nil)
	_ ZeroWriter   = (*memExport)(nil)
	_ Mapper       = (*memExport)(nil)
	_ SparseReader = (*memExport)(nil)
	_ BlockSizer   = (*memExport)(nil)
	_ Describer    = (*memExport)(nil)
)

// NewMemBackend returns a MemBackend without exports.
func NewMemBackend() *MemBackend {
	return &MemBackend{disks: map[string]*memDisk{}}
}

// Add creates an export of size bytes, all holes. It fails with
// errs.ErrExists if the name is taken and errs.ErrInvalid for a bad name
// or block size.
func (m *MemBackend) Add(name string, size uint64, o MemOptions) error {
	if len(name) > maxString {
		return fmt.Errorf("mem export %q: name too long: %w", name, errs.ErrInvalid)
	}
	if o.MinBlock == 0 {
		o.MinBlock = 1
	}
	if bits.OnesCount32(o.MinBlock) != 1 || o.MinBlock > 64<<10 || size%uint64(o.MinBlock) != 0 {
		return fmt.Errorf("mem export %q: block size %d for size %d: %w", name, o.MinBlock, size, errs.ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.disks[name]; ok {
		return fmt.Errorf("mem export %q: %w", name, errs.ErrExists)
	}
	m.disks[name] = &memDisk{size: size, opts: o, pages: map[uint64]*[memPage]byte{}}
	return nil
}

// SetReadOnly changes whether an export refuses writes; handles opened
// before keep the state they were opened with.
func (m *MemBackend) SetReadOnly(name string, ro bool) error {
	d, err := m.disk(name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.opts.ReadOnly = ro
	d.mu.Unlock()
	return nil
}

func (m *MemBackend) disk(name string) (*memDisk, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.disks[name]
	if !ok {
		return nil, fmt.Errorf("mem export %q: %w", name, errs.ErrNotFound)
	}
	return d, nil
}

// Open implements Backend.
func (m *MemBackend) Open(_ context.Context, name string) (Export, error) {
	d, err := m.disk(name)
	if err != nil {
		return nil, err
	}
	d.mu.RLock()
	ro := d.opts.ReadOnly
	d.mu.RUnlock()
	return &memExport{d: d, ro: ro}, nil
}

// List implements Backend: the names in lexical order.
func (m *MemBackend) List(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.disks))
	for n := range m.disks {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func (e *memExport) Size() uint64        { return e.d.size }
func (e *memExport) ReadOnly() bool      { return e.ro }
func (e *memExport) Description() string { return e.d.opts.Description }
func (e *memExport) Close() error        { return nil }

func (e *memExport) BlockSize() (min, preferred, max uint32) {
	return e.d.opts.MinBlock, 4096, DefaultMaxPayload
}

func (e *memExport) Flush(context.Context) error { return nil }

func (e *memExport) check(off, n uint64, write bool) error {
	if write && e.ro {
		return fmt.Errorf("mem export: write: %w", errs.ErrReadOnly)
	}
	if off > e.d.size || n > e.d.size-off {
		if write {
			return fmt.Errorf("mem export: %d+%d beyond %d: %w", off, n, e.d.size, errs.ErrNoSpace)
		}
		return fmt.Errorf("mem export: %d+%d beyond %d: %w", off, n, e.d.size, errs.ErrInvalid)
	}
	return nil
}

// pages calls fn for each page touched by [off, off+n) with the page index
// and the byte range within the page, and the offset of that range
// relative to off.
func pages(off, n uint64, fn func(pg uint64, lo, hi int, rel uint64)) {
	end := off + n
	for pos := off; pos < end; {
		pg := pos / memPage
		lo := int(pos % memPage)
		hi := int(min(memPage, end-pg*memPage))
		fn(pg, lo, hi, pos-off)
		pos = (pg + 1) * memPage
	}
}

func (e *memExport) ReadAt(_ context.Context, p []byte, off uint64) error {
	_, err := e.read(p, off, false)
	return err
}

func (e *memExport) ReadSparse(_ context.Context, p []byte, off uint64) ([]Extent, error) {
	return e.read(p, off, true)
}

func (e *memExport) read(p []byte, off uint64, extents bool) ([]Extent, error) {
	if err := e.check(off, uint64(len(p)), false); err != nil {
		return nil, err
	}
	var exts []Extent
	e.d.mu.RLock()
	defer e.d.mu.RUnlock()
	pages(off, uint64(len(p)), func(pg uint64, lo, hi int, rel uint64) {
		dst := p[rel : rel+uint64(hi-lo)]
		page := e.d.pages[pg]
		if page != nil {
			copy(dst, page[lo:hi])
		} else {
			clear(dst)
		}
		if extents {
			exts = addExtent(exts, uint64(hi-lo), page == nil)
		}
	})
	return exts, nil
}

func addExtent(exts []Extent, n uint64, hole bool) []Extent {
	if k := len(exts); k > 0 && exts[k-1].Hole == hole {
		exts[k-1].Length += n
		return exts
	}
	return append(exts, Extent{Length: n, Hole: hole})
}

func (e *memExport) WriteAt(_ context.Context, p []byte, off uint64, _ bool) error {
	if err := e.check(off, uint64(len(p)), true); err != nil {
		return err
	}
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	pages(off, uint64(len(p)), func(pg uint64, lo, hi int, rel uint64) {
		copy(e.d.page(pg)[lo:hi], p[rel:])
	})
	return nil
}

// page returns page pg, allocating it. Callers hold mu for writing.
func (d *memDisk) page(pg uint64) *[memPage]byte {
	page := d.pages[pg]
	if page == nil {
		page = new([memPage]byte)
		d.pages[pg] = page
	}
	return page
}

// Trim frees the pages the range covers entirely and zeroes the rest of
// the range, so a trimmed range reads as zeroes.
func (e *memExport) Trim(_ context.Context, off, n uint64) error {
	if err := e.check(off, n, true); err != nil {
		return err
	}
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	e.d.punch(off, n)
	return nil
}

func (d *memDisk) punch(off, n uint64) {
	pages(off, n, func(pg uint64, lo, hi int, _ uint64) {
		page := d.pages[pg]
		switch {
		case page == nil:
		case lo == 0 && (hi == memPage || pg*memPage+uint64(hi) == d.size):
			delete(d.pages, pg)
		default:
			clear(page[lo:hi])
		}
	})
}

func (e *memExport) WriteZeroes(_ context.Context, off, n uint64, _, mayTrim bool) error {
	if err := e.check(off, n, true); err != nil {
		return err
	}
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	if mayTrim {
		e.d.punch(off, n)
		return nil
	}
	pages(off, n, func(pg uint64, lo, hi int, _ uint64) {
		clear(e.d.page(pg)[lo:hi])
	})
	return nil
}

func (e *memExport) Extents(_ context.Context, off, n uint64) ([]Extent, error) {
	if err := e.check(off, n, false); err != nil {
		return nil, err
	}
	var exts []Extent
	e.d.mu.RLock()
	defer e.d.mu.RUnlock()
	if len(e.d.pages) == 0 {
		return []Extent{{Length: n, Hole: true}}, nil
	}
	pages(off, n, func(pg uint64, lo, hi int, _ uint64) {
		exts = addExtent(exts, uint64(hi-lo), e.d.pages[pg] == nil)
	})
	return exts, nil
}
