package volclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
)

// Import and export move a raw image between a file (or a stream) and a
// volume, sparse both ways: a zero block is neither stored nor written.
// Several requests are in flight at once, each from a buffer of the
// segment (Lend), so that the bytes go from the file to the data blocker
// without a copy.

// ImportOptions shape an Import.
type ImportOptions struct {
	// Size of the new volume in bytes; 0: the input's size rounded up to
	// a multiple of 512. An input larger than Size is refused. A stream
	// of unknown length (a pipe) needs it. Not with Existing.
	Size uint64
	// Existing: write into the existing volume of that name instead of
	// creating one. The volume's first bytes become the input's (zero
	// ranges of the input that the volume holds data in are trimmed or
	// zeroed); the bytes past the input's end are left as they were, as
	// `qemu-img convert -n` does. The volume must be at least as large
	// as the input.
	Existing bool
	// Source names the input in messages: a file's name, "-" for stdin,
	// "" for "the input".
	Source string
	// Workers is the number of requests in flight (default 8).
	Workers int
	// ChunkSize is the size of one request (default: the volume's block
	// size, at most MaxIO, at least 1 MiB); a multiple of 4096.
	ChunkSize int
	// Timeout bounds each request (0: no bound but ctx's).
	Timeout time.Duration
	// Progress, if set, is called after each chunk with the input bytes
	// done and the total (0 if unknown), from one goroutine at a time.
	Progress func(done, total uint64)
}

// ImportStats tell what an Import did; their JSON form is what `vlmc
// import --json` prints.
type ImportStats struct {
	Volume string `json:"volume"`
	// VolumeSize is the volume's size in bytes.
	VolumeSize uint64 `json:"volume_size"`
	// Created: the volume was created by the import.
	Created bool `json:"created"`
	// InputBytes is the length of the input (holes included).
	InputBytes uint64 `json:"input_bytes"`
	// BytesRead were read from the input (a file's holes are not read).
	BytesRead uint64 `json:"bytes_read"`
	// BytesWritten were written to the volume.
	BytesWritten uint64 `json:"bytes_written"`
	// ZeroBytesSkipped are the input's zero bytes (holes or zero data)
	// that were not written.
	ZeroBytesSkipped uint64 `json:"zero_bytes_skipped"`
	// BytesTrimmed were zeroed in an existing volume (trimmed or written
	// as zeros) because the input has zeros where the volume had data.
	BytesTrimmed uint64  `json:"bytes_trimmed,omitempty"`
	Seconds      float64 `json:"seconds"`
	// MiBPerSecond is InputBytes per second, in MiB.
	MiBPerSecond float64 `json:"mib_per_s"`
}

// ExportOptions shape an Export.
type ExportOptions struct {
	// Workers is the number of requests in flight (default 8).
	Workers int
	// ChunkSize as in ImportOptions.
	ChunkSize int
	// Timeout bounds each request (0: no bound but ctx's).
	Timeout time.Duration
	// Progress, if set, is called after each chunk with the volume bytes
	// done and the volume's size, from one goroutine at a time.
	Progress func(done, total uint64)
}

// ExportStats tell what an Export did; their JSON form is what `vlmc
// export --json` prints.
type ExportStats struct {
	Volume     string `json:"volume"`
	VolumeSize uint64 `json:"volume_size"`
	// Sparse: the output was a regular file written sparse (zero ranges
	// seeked over); else every byte was written, zeros included.
	Sparse bool `json:"sparse"`
	// BytesRead were read from the volume (its zero blocks are not read).
	BytesRead uint64 `json:"bytes_read"`
	// BytesWritten were written to the output.
	BytesWritten uint64 `json:"bytes_written"`
	// ZeroBytesSkipped are zero bytes that were seeked over, not written.
	ZeroBytesSkipped uint64  `json:"zero_bytes_skipped"`
	Seconds          float64 `json:"seconds"`
	// MiBPerSecond is VolumeSize per second, in MiB.
	MiBPerSecond float64 `json:"mib_per_s"`
}

// sector is the unit a volume's size is rounded to and the part of the
// input that is checked for the magic of other image formats.
const sector = 512

// zeroGrain is the granularity at which zero ranges are found in data.
const zeroGrain = 4096

// defaultWorkers is the number of requests in flight.
const defaultWorkers = 8

// imageFormat names the image format whose magic begins hdr (the input's
// first sector), "" for none known: raw. size is the virtual size where
// the header tells it, else 0.
func imageFormat(hdr []byte) (format string, size uint64) {
	switch {
	case bytes.HasPrefix(hdr, []byte("QFI\xfb")):
		if len(hdr) >= 32 {
			size = binary.BigEndian.Uint64(hdr[24:32])
		}
		return "qcow2", size
	case bytes.HasPrefix(hdr, []byte("QED\x00")):
		if len(hdr) >= 48 {
			size = binary.LittleEndian.Uint64(hdr[40:48])
		}
		return "qed", size
	case bytes.HasPrefix(hdr, []byte("KDMV")), bytes.HasPrefix(hdr, []byte("COWD")),
		bytes.HasPrefix(hdr, []byte("# Disk DescriptorFile")):
		return "vmdk", 0
	case bytes.HasPrefix(hdr, []byte("<<< ")) && len(hdr) >= 68 && binary.LittleEndian.Uint32(hdr[64:68]) == 0xbeda107f:
		return "vdi", 0
	case bytes.HasPrefix(hdr, []byte("vhdxfile")):
		return "vhdx", 0
	case bytes.HasPrefix(hdr, []byte("conectix")):
		return "vpc", 0
	}
	return "", 0
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// notRaw is the error for an input in another image format: it shows the
// commands that convert it.
func notRaw(src, what, name, format string, size uint64) error {
	if src == "" || src == "-" {
		return fmt.Errorf("import into volume %q: %s is a %s image, not raw: convert it to raw first (qemu-img convert -O raw FILE FILE.raw): %w",
			name, what, format, errs.ErrInvalid)
	}
	q, n := shellQuote(src), shellQuote(name)
	sz := "SIZE"
	if size > 0 {
		sz = fmt.Sprintf("%dB", size)
	}
	return fmt.Errorf("import into volume %q: %s is a %s image, not raw: convert it first: "+
		"qemu-img convert -O raw %s %s && vlmc import %s %s "+
		"(or without a temporary file: nbdcopy -- [ qemu-nbd -r -f %s %s ] - | vlmc import - %s --size %s): %w",
		name, q, format, q, shellQuote(src+".raw"), shellQuote(src+".raw"), n, format, q, n, sz, errs.ErrInvalid)
}

// input is what Import reads: a file (or any ReaderAt of known size),
// or a stream.
type input struct {
	at     io.ReaderAt
	stream io.Reader
	size   int64    // -1: unknown (a stream)
	data   []Extent // a regular file's data ranges (SEEK_DATA/SEEK_HOLE); nil: all data
	prefix []byte   // a stream's first bytes, read to check the format
}

// sizedReaderAt is a ReaderAt that knows its size (bytes.Reader,
// io.SectionReader, ...).
type sizedReaderAt interface {
	io.ReaderAt
	Size() int64
}

func openInput(r io.Reader) (*input, error) {
	if f, ok := r.(*os.File); ok {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if st.Mode().IsRegular() {
			in := &input{at: f, size: st.Size()}
			ext, err := dataExtents(f, st.Size())
			if err == nil {
				in.data = ext
			}
			return in, nil
		}
		if st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 { // a block device
			n, err := f.Seek(0, io.SeekEnd)
			if err == nil {
				return &input{at: f, size: n}, nil
			}
		}
		return &input{stream: f, size: -1}, nil
	}
	if s, ok := r.(sizedReaderAt); ok {
		return &input{at: s, size: s.Size()}, nil
	}
	return &input{stream: r, size: -1}, nil
}

// dataExtents lists the data ranges of regular file f with SEEK_DATA and
// SEEK_HOLE (the rest are holes, read as zeros).
func dataExtents(f *os.File, size int64) ([]Extent, error) {
	fd := int(f.Fd())
	var ext []Extent
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, err
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		h = min(h, size)
		if h > d {
			ext = append(ext, Extent{Offset: uint64(d), Size: uint64(h - d)})
		}
		off = h
	}
	return ext, nil
}

// within returns the parts of the sorted extents ext that lie in [off,
// off+n).
func within(ext []Extent, off, n uint64) []Extent {
	i := sort.Search(len(ext), func(i int) bool { return ext[i].Offset+ext[i].Size > off })
	var out []Extent
	for ; i < len(ext) && ext[i].Offset < off+n; i++ {
		lo, hi := max(ext[i].Offset, off), min(ext[i].Offset+ext[i].Size, off+n)
		out = append(out, Extent{Offset: lo, Size: hi - lo})
	}
	return out
}

// zeros is a page of zeros to compare data with and to write.
var zeros = make([]byte, 1<<20)

// isZero tells whether p holds only zeros.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// dataBounds returns the smallest [lo, hi) of p, in whole zeroGrain
// units (hi clipped to len(p)), outside which p holds only zeros; lo ==
// hi if p is all zeros.
func dataBounds(p []byte) (lo, hi int) {
	for lo < len(p) && isZero(p[lo:min(lo+zeroGrain, len(p))]) {
		lo += zeroGrain
	}
	if lo >= len(p) {
		return len(p), len(p)
	}
	hi = (len(p) + zeroGrain - 1) / zeroGrain * zeroGrain
	for hi-zeroGrain > lo && isZero(p[hi-zeroGrain:min(hi, len(p))]) {
		hi -= zeroGrain
	}
	return lo, min(hi, len(p))
}

// chunkSize picks the request size for a volume of block size bs.
func chunkSize(want int, bs uint32) int {
	if want > 0 {
		return min(max(want/zeroGrain*zeroGrain, zeroGrain), MaxIO)
	}
	cs := max(int(bs), 1)
	for cs < 1<<20 {
		cs *= 2
	}
	return min(cs, MaxIO)
}

// buffers lends n buffers of size bytes from the segment (so that the
// requests carry them without a copy), or plain memory where the
// segment has no room.
type buffers struct {
	c    *Client
	bufs [][]byte
	lent []bool
}

func (c *Client) buffers(n, size int) *buffers {
	b := &buffers{c: c}
	for range n {
		p, err := c.Lend(size)
		lent := err == nil
		if !lent {
			p = make([]byte, size)
		}
		b.bufs = append(b.bufs, p)
		b.lent = append(b.lent, lent)
	}
	return b
}

func (b *buffers) release() {
	for i, p := range b.bufs {
		if b.lent[i] {
			b.c.Unlend(p)
		}
	}
}

// progress serializes the Progress callback.
type progress struct {
	mu    sync.Mutex
	done  uint64
	total uint64
	fn    func(done, total uint64)
}

func (p *progress) add(n uint64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	p.done += n
	p.fn(p.done, p.total)
	p.mu.Unlock()
}

// Import copies a raw image from r into volume name: a new volume
// (created of o.Size, or of the input's size rounded up to 512 bytes), or
// with o.Existing an existing one. r is read with ReadAt by several
// goroutines when it is a regular file (an *os.File; its holes are found
// with SEEK_DATA/SEEK_HOLE and not read) or has a Size method (a
// bytes.Reader, an io.SectionReader), else read in order (a pipe; if
// ctx ends while a read of it blocks, Import returns and leaves that read
// behind). Zero ranges of the input are not written: the volume stays
// thin. An input
// that starts with the magic of another image format (qcow2, qed, vmdk,
// vdi, vhdx, vpc) is refused with errs.ErrInvalid and a message showing
// the qemu-img command that converts it. Everything written is flushed
// (durable) when Import returns. If it fails after creating the volume,
// the volume is removed, and the error says so.
func (c *Client) Import(ctx context.Context, r io.Reader, name string, o ImportOptions) (ImportStats, error) {
	start := time.Now()
	st := ImportStats{Volume: name}
	what := fmt.Sprintf("%q", o.Source)
	switch o.Source {
	case "":
		what = "the input"
	case "-":
		what = "stdin"
	}
	in, err := openInput(r)
	if err != nil {
		return st, fmt.Errorf("import into volume %q: %s: %w", name, what, err)
	}
	if in.stream != nil {
		in.stream = &ctxReader{ctx: ctx, r: in.stream, buf: make([]byte, 256<<10), res: make(chan readResult, 1)}
	}
	// The first sector: another image format?
	var hdr []byte
	if in.at != nil {
		hdr = make([]byte, min(int64(sector), in.size))
		if _, err := in.at.ReadAt(hdr, 0); err != nil && err != io.EOF {
			return st, fmt.Errorf("import into volume %q: reading %s: %w", name, what, err)
		}
	} else {
		hdr = make([]byte, sector)
		n, err := io.ReadFull(in.stream, hdr)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return st, fmt.Errorf("import into volume %q: reading %s: %w", name, what, err)
		}
		hdr = hdr[:n]
		in.prefix = hdr
	}
	if f, size := imageFormat(hdr); f != "" {
		return st, notRaw(o.Source, what, name, f, size)
	}
	if in.size == -1 && len(in.prefix) < sector {
		in.size = int64(len(in.prefix)) // the whole stream is read already
	}

	// The volume.
	var alloc []Extent // an existing volume's allocated ranges within the input's
	if o.Existing {
		if o.Size != 0 {
			return st, fmt.Errorf("import into existing volume %q: no size to give (it has one): %w", name, errs.ErrInvalid)
		}
		vi, err := c.Info(ctx, name)
		if err != nil {
			return st, fmt.Errorf("import into existing volume: %w", err)
		}
		if vi.ReadOnly {
			return st, fmt.Errorf("import into volume %q: a snapshot, read-only: %w", name, errs.ErrReadOnly)
		}
		if in.size > 0 && uint64(in.size) > vi.Size {
			return st, fmt.Errorf("import into volume %q: %s holds %d bytes, more than the volume's %d: %w",
				name, what, in.size, vi.Size, errs.ErrTooLarge)
		}
		st.VolumeSize = vi.Size
	} else {
		size := o.Size
		switch {
		case in.size < 0 && size == 0:
			return st, fmt.Errorf("import into volume %q: %s has no size to read: give the volume's size (--size): %w", name, what, errs.ErrInvalid)
		case in.size == 0 && size == 0:
			return st, fmt.Errorf("import into volume %q: %s is empty: give the volume's size (--size) for a blank volume: %w", name, what, errs.ErrInvalid)
		case size == 0:
			size = (uint64(in.size) + sector - 1) / sector * sector
		case in.size > 0 && uint64(in.size) > size:
			return st, fmt.Errorf("import into volume %q: size %d bytes is smaller than %s (%d bytes): %w",
				name, size, what, in.size, errs.ErrTooLarge)
		}
		if err := c.Create(ctx, name, size); err != nil {
			return st, fmt.Errorf("import: %w", err)
		}
		st.Created, st.VolumeSize = true, size
	}
	fail := func(err error) (ImportStats, error) {
		if !st.Created {
			return st, err
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if rerr := c.RemoveForce(cctx, name); rerr != nil && !errors.Is(rerr, errs.ErrNotFound) {
			return st, fmt.Errorf("%w (and the new volume %q could not be removed: %v; remove it with vlmc remove %s)", err, name, rerr, shellQuote(name))
		}
		return st, fmt.Errorf("%w; the new volume %q was removed", err, name)
	}
	v, err := c.OpenSession(ctx, name)
	if err != nil {
		return fail(fmt.Errorf("import into volume %q: %w", name, err))
	}
	closed := false
	defer func() {
		if !closed {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			v.Close(cctx)
			cancel()
		}
	}()
	if o.Existing && in.size != 0 {
		n := v.Size
		if in.size > 0 {
			n = uint64(in.size)
		}
		if alloc, err = v.allocatedAll(ctx, 0, n); err != nil {
			return fail(fmt.Errorf("import into volume %q: %w", name, err))
		}
	}

	im := &importer{c: c, v: v, o: o, in: in, alloc: alloc, what: what,
		cs: chunkSize(o.ChunkSize, v.BlockSize), workers: max(o.Workers, 1)}
	if o.Workers == 0 {
		im.workers = defaultWorkers
	}
	im.prog = &progress{fn: o.Progress}
	if in.size > 0 {
		im.prog.total = uint64(in.size)
	}
	err = im.run(ctx)
	st.InputBytes = im.inputBytes.Load()
	st.BytesRead = im.read.Load()
	st.BytesWritten = im.written.Load()
	st.ZeroBytesSkipped = im.skipped.Load()
	st.BytesTrimmed = im.trimmed.Load()
	if err == nil {
		fctx, cancel := reqCtx(ctx, o.Timeout)
		err = v.Flush(fctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("import into volume %q: flush: %w", name, err)
		}
	}
	if err == nil {
		closed = true
		err = v.Close(context.WithoutCancel(ctx))
	}
	if err != nil {
		if !closed {
			closed = true
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			v.Close(cctx)
			cancel()
		}
		return fail(err)
	}
	st.Seconds = time.Since(start).Seconds()
	if st.Seconds > 0 {
		st.MiBPerSecond = float64(st.InputBytes) / (1 << 20) / st.Seconds
	}
	return st, nil
}

// allocatedAll is Allocated over [off, off+n), asked in windows whose
// answer fits a reply.
func (v *Volume) allocatedAll(ctx context.Context, off, n uint64) ([]Extent, error) {
	window := uint64(max(v.BlockSize, 4096)) * 8192
	var out []Extent
	for pos, end := off, off+n; pos < end; pos += window {
		ext, err := v.Allocated(ctx, pos, min(window, end-pos))
		if err != nil {
			return nil, err
		}
		for _, x := range ext {
			if k := len(out) - 1; k >= 0 && out[k].Offset+out[k].Size == x.Offset {
				out[k].Size += x.Size
			} else {
				out = append(out, x)
			}
		}
	}
	return out, nil
}

// importer is one Import's work.
type importer struct {
	c       *Client
	v       *Volume
	o       ImportOptions
	in      *input
	alloc   []Extent
	what    string
	cs      int
	workers int
	prog    *progress

	inputBytes, read, written, skipped, trimmed atomic.Uint64
}

// job is one chunk: buf holds the input's n bytes at off.
type job struct {
	buf []byte
	off uint64
}

func (im *importer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bufs := im.c.buffers(im.workers+1, im.cs)
	defer bufs.release()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	failed := func(err error) {
		once.Do(func() { first = err; cancel(err) })
	}
	if im.in.at != nil {
		var next atomic.Uint64
		total := uint64(im.in.size)
		for w := range im.workers {
			wg.Go(func() {
				buf := bufs.bufs[w]
				for ctx.Err() == nil {
					off := next.Add(uint64(im.cs)) - uint64(im.cs)
					if off >= total {
						return
					}
					n := min(uint64(im.cs), total-off)
					if err := im.fileChunk(ctx, buf[:n], off); err != nil {
						failed(err)
						return
					}
				}
			})
		}
		wg.Wait()
	} else {
		free := make(chan []byte, len(bufs.bufs))
		for _, b := range bufs.bufs {
			free <- b
		}
		jobs := make(chan job)
		if cr, ok := im.in.stream.(*ctxReader); ok {
			cr.ctx = ctx // a failed write ends a blocked read too
		}
		for range im.workers {
			wg.Go(func() {
				for j := range jobs {
					if ctx.Err() == nil {
						if err := im.chunk(ctx, j.buf, j.off); err != nil {
							failed(err)
						}
					}
					free <- j.buf[:im.cs]
				}
			})
		}
		err := im.readStream(ctx, free, jobs)
		close(jobs)
		wg.Wait()
		if err != nil {
			failed(err)
		}
	}
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("import into volume %q: %w", im.v.Name, context.Cause(ctx))
	}
	return first
}

// readStream reads the stream in order into free buffers and hands them
// to the workers.
func (im *importer) readStream(ctx context.Context, free chan []byte, jobs chan<- job) error {
	limit := im.v.Size
	prefix := im.in.prefix
	var off uint64
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return nil
		}
		n := copy(buf, prefix)
		prefix = prefix[n:]
		eof := false
		if len(prefix) == 0 && n < len(buf) {
			m, err := io.ReadFull(im.in.stream, buf[n:])
			n += m
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				eof = true
			} else if err != nil {
				if ctx.Err() != nil {
					return nil // the read was ended by the failure or ctx
				}
				return fmt.Errorf("import into volume %q: reading %s at byte %d: %w", im.v.Name, im.what, off+uint64(n), err)
			}
		}
		if off+uint64(n) > limit {
			return fmt.Errorf("import into volume %q: %s holds more than the volume's %d bytes: %w", im.v.Name, im.what, limit, errs.ErrTooLarge)
		}
		if n == 0 {
			free <- buf
			break
		}
		im.read.Add(uint64(n))
		select {
		case jobs <- job{buf: buf[:n], off: off}:
		case <-ctx.Done():
			return nil
		}
		off += uint64(n)
		if eof {
			break
		}
	}
	return nil
}

// fileChunk reads the input's bytes at [off, off+len(buf)) into buf
// (only its data ranges: holes are zeroed in place) and imports them.
func (im *importer) fileChunk(ctx context.Context, buf []byte, off uint64) error {
	n := uint64(len(buf))
	parts := []Extent{{Offset: off, Size: n}}
	if im.in.data != nil {
		parts = within(im.in.data, off, n)
	}
	if len(parts) == 0 { // a hole: nothing to read
		im.inputBytes.Add(n)
		defer im.prog.add(n)
		return im.zeroChunk(ctx, buf, off)
	}
	pos := off
	for _, p := range parts {
		clear(buf[pos-off : p.Offset-off])
		b := buf[p.Offset-off : p.Offset-off+p.Size]
		m, err := im.in.at.ReadAt(b, int64(p.Offset))
		if m < len(b) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the file shrank under us
			}
			return fmt.Errorf("import into volume %q: reading %s at byte %d: %w", im.v.Name, im.what, p.Offset+uint64(m), err)
		}
		im.read.Add(p.Size)
		pos = p.Offset + p.Size
	}
	clear(buf[pos-off:])
	return im.chunk(ctx, buf, off)
}

// Kinds of the units (blocks, or parts of a block larger than a chunk)
// of a chunk.
const (
	unitData      = iota // holds data: written
	unitZero             // zeros where the volume has none: skipped
	unitZeroAlloc        // zeros where the volume has data: zeroed
)

// chunk writes the input's bytes buf at off into the volume: the runs of
// its blocks that hold data (less the zeros at a run's ends, in
// zeroGrain units, where the volume holds no data), so that a block of
// zeros is never written; where an existing volume has data and the input
// zeros, the volume is zeroed.
func (im *importer) chunk(ctx context.Context, buf []byte, off uint64) error {
	n := uint64(len(buf))
	im.inputBytes.Add(n)
	defer im.prog.add(n)
	u := min(uint64(max(im.v.BlockSize, 1)), uint64(im.cs)) // chunks are whole units
	type run struct {
		lo, hi uint64 // within buf
		kind   int
	}
	var runs []run
	for p := uint64(0); p < n; {
		end := min(n, (off+p)/u*u+u-off)
		k := unitData
		if isZero(buf[p:end]) {
			k = unitZero
			if len(within(im.alloc, off+p, end-p)) > 0 {
				k = unitZeroAlloc
			}
		}
		if l := len(runs) - 1; l >= 0 && runs[l].kind == k {
			runs[l].hi = end
		} else {
			runs = append(runs, run{p, end, k})
		}
		p = end
	}
	for _, r := range runs {
		switch r.kind {
		case unitZero:
			im.skipped.Add(r.hi - r.lo)
		case unitZeroAlloc:
			if err := im.zeroRange(ctx, off+r.lo, r.hi-r.lo); err != nil {
				return err
			}
		case unitData:
			lo, hi := r.lo, r.hi
			l, h := dataBounds(buf[lo:hi])
			firstEnd := min(hi, (off+lo)/u*u+u-off)
			if len(within(im.alloc, off+lo, firstEnd-lo)) == 0 {
				lo += uint64(l)
			}
			lastStart := max(r.lo, (off+hi-1)/u*u-off)
			if len(within(im.alloc, off+lastStart, hi-lastStart)) == 0 {
				hi = r.lo + uint64(h)
			}
			im.skipped.Add((lo - r.lo) + (r.hi - hi))
			// A lent buffer is sent from its start: move the run there
			// (the runs after it lie past its end, untouched).
			if lo > 0 {
				copy(buf, buf[lo:hi])
			}
			rctx, cancel := reqCtx(ctx, im.o.Timeout)
			err := im.v.WriteAt(rctx, buf[:hi-lo], off+lo, false)
			cancel()
			if err != nil {
				return fmt.Errorf("import into volume %q: writing %d bytes at %d: %w", im.v.Name, hi-lo, off+lo, err)
			}
			im.written.Add(hi - lo)
		}
	}
	return nil
}

// zeroChunk handles a chunk of zeros (a hole of the input) at off.
func (im *importer) zeroChunk(ctx context.Context, buf []byte, off uint64) error {
	return im.zeroRange(ctx, off, uint64(len(buf)))
}

var (
	zeroIOOnce sync.Once
	zeroIO     []byte // MaxIO zeros, for zeroing parts of blocks
)

// zeroRange makes [off, off+n) of an existing volume zero where it has
// data: its whole blocks are trimmed, the rest written as zeros.
func (im *importer) zeroRange(ctx context.Context, off, n uint64) error {
	bs := uint64(max(im.v.BlockSize, 1))
	for p, end := off, off+n; p < end; {
		e := min(end, p/bs*bs+bs)
		if len(within(im.alloc, p, e-p)) == 0 {
			im.skipped.Add(e - p)
			p = e
			continue
		}
		rctx, cancel := reqCtx(ctx, im.o.Timeout)
		var err error
		if p%bs == 0 && e-p == bs {
			err = im.v.Trim(rctx, p, bs)
		} else {
			zeroIOOnce.Do(func() { zeroIO = make([]byte, MaxIO) })
			for q := p; q < e && err == nil; q += MaxIO {
				err = im.v.WriteAt(rctx, zeroIO[:min(MaxIO, e-q)], q, false)
			}
		}
		cancel()
		if err != nil {
			return fmt.Errorf("import into volume %q: zeroing %d bytes at %d: %w", im.v.Name, e-p, p, err)
		}
		im.trimmed.Add(e - p)
		p = e
	}
	return nil
}

// Export copies volume or snapshot name to w as a raw image. If w is a
// regular file that is empty (an *os.File, at offset 0, not in append
// mode) it is written by several goroutines at the offsets of the
// volume's data, seeking over its zero blocks and zero ranges, and
// truncated to the volume's size at the end: a sparse file; then synced.
// Else every byte is written in order, zeros included (a pipe cannot be
// sparse).
func (c *Client) Export(ctx context.Context, name string, w io.Writer, o ExportOptions) (ExportStats, error) {
	start := time.Now()
	st := ExportStats{Volume: name}
	v, err := c.OpenSession(ctx, name)
	if err != nil {
		return st, fmt.Errorf("export: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		v.Close(cctx)
		cancel()
	}()
	st.VolumeSize = v.Size
	alloc, err := v.allocatedAll(ctx, 0, v.Size)
	if err != nil {
		return st, fmt.Errorf("export of volume %q: %w", name, err)
	}
	ex := &exporter{c: c, v: v, o: o, alloc: alloc, cs: chunkSize(o.ChunkSize, v.BlockSize), workers: max(o.Workers, 1)}
	if o.Workers == 0 {
		ex.workers = defaultWorkers
	}
	ex.prog = &progress{fn: o.Progress, total: v.Size}
	f, sparse := w.(*os.File)
	if sparse {
		sparse = emptyRegular(f)
	}
	st.Sparse = sparse
	if sparse {
		err = ex.toFile(ctx, f)
	} else {
		err = ex.toStream(ctx, w, seekable(w))
	}
	st.BytesRead, st.BytesWritten, st.ZeroBytesSkipped = ex.read.Load(), ex.written.Load(), ex.skipped.Load()
	if err != nil {
		return st, err
	}
	st.Seconds = time.Since(start).Seconds()
	if st.Seconds > 0 {
		st.MiBPerSecond = float64(st.VolumeSize) / (1 << 20) / st.Seconds
	}
	return st, nil
}

// emptyRegular tells whether f is an empty regular file, at offset 0,
// not in append mode: one that may be written sparse.
func emptyRegular(f *os.File) bool {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() != 0 {
		return false
	}
	if pos, err := f.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return false
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_APPEND == 0
}

// seekable returns w as a file to seek over zeros in, when it is an empty
// regular file (stdout redirected to a new file), else nil.
func seekable(w io.Writer) *os.File {
	if f, ok := w.(*os.File); ok && emptyRegular(f) {
		return f
	}
	return nil
}

// exporter is one Export's work.
type exporter struct {
	c       *Client
	v       *Volume
	o       ExportOptions
	alloc   []Extent
	cs      int
	workers int
	prog    *progress

	read, written, skipped atomic.Uint64
}

// readChunk reads the volume's bytes at [off, off+len(buf)) into buf:
// only the allocated ranges (the rest is zeroed). It returns whether buf
// may hold data.
func (ex *exporter) readChunk(ctx context.Context, buf []byte, off uint64) (bool, error) {
	parts := within(ex.alloc, off, uint64(len(buf)))
	if len(parts) == 0 {
		return false, nil
	}
	rctx, cancel := reqCtx(ctx, ex.o.Timeout)
	defer cancel()
	var err error
	if len(parts) == 1 && parts[0].Offset == off {
		// From the buffer's start: the lent request itself is sent.
		err = ex.v.ReadAt(rctx, buf[:parts[0].Size], off)
		clear(buf[parts[0].Size:])
	} else {
		clear(buf)
		for _, p := range parts {
			if err = ex.v.ReadAt(rctx, buf[p.Offset-off:p.Offset-off+p.Size], p.Offset); err != nil {
				break
			}
		}
	}
	if err != nil {
		return false, fmt.Errorf("export of volume %q: reading at %d: %w", ex.v.Name, off, err)
	}
	for _, p := range parts {
		ex.read.Add(p.Size)
	}
	return true, nil
}

// toFile writes the volume's data into empty regular file f at their
// offsets, in parallel, and leaves the zeros as holes.
func (ex *exporter) toFile(ctx context.Context, f *os.File) error {
	// The chunks that hold allocated bytes, in order.
	var chunks []uint64
	cs := uint64(ex.cs)
	for _, x := range ex.alloc {
		for c := x.Offset / cs * cs; c < x.Offset+x.Size; c += cs {
			if len(chunks) == 0 || chunks[len(chunks)-1] != c {
				chunks = append(chunks, c)
			}
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bufs := ex.c.buffers(ex.workers, ex.cs)
	defer bufs.release()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range ex.workers {
		wg.Go(func() {
			buf := bufs.bufs[w]
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(chunks)) {
					return
				}
				off := chunks[i]
				n := min(cs, ex.v.Size-off)
				b := buf[:n]
				if _, err := ex.readChunk(ctx, b, off); err != nil {
					cancel(err)
					return
				}
				// Write the data runs, skip the zero ranges.
				for pos := 0; pos < len(b); {
					lo, hi := nextRun(b, pos)
					if lo == hi {
						break
					}
					if _, err := f.WriteAt(b[lo:hi], int64(off)+int64(lo)); err != nil {
						cancel(fmt.Errorf("export of volume %q: %w", ex.v.Name, err))
						return
					}
					ex.written.Add(uint64(hi - lo))
					pos = hi
				}
				ex.prog.add(n)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	ex.skipped.Store(ex.v.Size - ex.written.Load())
	ex.prog.add(ex.v.Size - ex.prog.done)
	if err := f.Truncate(int64(ex.v.Size)); err != nil {
		return fmt.Errorf("export of volume %q: %w", ex.v.Name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("export of volume %q: %w", ex.v.Name, err)
	}
	return nil
}

// runGrain is the granularity at which an export to a file looks for
// zero ranges to seek over.
const runGrain = 64 << 10

// nextRun returns the next range of p from pos on, in runGrain units,
// that holds data: [lo, hi), lo == hi if none is left.
func nextRun(p []byte, pos int) (lo, hi int) {
	lo = pos
	for lo < len(p) && isZero(p[lo:min(lo+runGrain, len(p))]) {
		lo += runGrain
	}
	if lo >= len(p) {
		return len(p), len(p)
	}
	hi = lo + runGrain
	for hi < len(p) && !isZero(p[hi:min(hi+runGrain, len(p))]) {
		hi += runGrain
	}
	return lo, min(hi, len(p))
}

// toStream writes the whole volume to w in order, zeros included (or
// seeked over, if sf is the file w is).
func (ex *exporter) toStream(ctx context.Context, w io.Writer, sf *os.File) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	nbuf := ex.workers + 2
	bufs := ex.c.buffers(nbuf, ex.cs)
	defer bufs.release()
	free := make(chan []byte, nbuf)
	for _, b := range bufs.bufs {
		free <- b
	}
	type piece struct {
		off  uint64
		buf  []byte // nil: zeros (not read)
		n    uint64
		data bool
		err  error
		done chan struct{}
	}
	order := make(chan *piece, nbuf)
	jobs := make(chan *piece)
	var wg sync.WaitGroup
	for range ex.workers {
		wg.Go(func() {
			for p := range jobs {
				if ctx.Err() == nil {
					p.data, p.err = ex.readChunk(ctx, p.buf[:p.n], p.off)
				} else {
					p.err = context.Cause(ctx)
				}
				close(p.done)
			}
		})
	}
	// The dispatcher: every chunk in order; those with allocated bytes
	// are read by the workers.
	wg.Go(func() {
		defer close(order)
		defer close(jobs)
		cs := uint64(ex.cs)
		for off := uint64(0); off < ex.v.Size; off += cs {
			p := &piece{off: off, n: min(cs, ex.v.Size-off), done: make(chan struct{})}
			needs := len(within(ex.alloc, off, p.n)) > 0
			if needs {
				select {
				case p.buf = <-free:
				case <-ctx.Done():
					return
				}
			} else {
				close(p.done)
			}
			select {
			case order <- p:
			case <-ctx.Done():
				return
			}
			if needs {
				select {
				case jobs <- p:
				case <-ctx.Done():
					p.err = context.Cause(ctx)
					close(p.done)
					return
				}
			}
		}
	})
	var werr error
	var pos int64
	for p := range order {
		<-p.done
		if werr == nil && p.err != nil {
			werr = p.err
		}
		if werr == nil {
			werr = ex.emit(w, sf, p.buf, p.n, p.data, &pos)
			if werr != nil {
				werr = fmt.Errorf("export of volume %q: writing at byte %d: %w", ex.v.Name, p.off, werr)
			}
			ex.prog.add(p.n)
		}
		if werr != nil {
			cancel(werr)
		}
		if p.buf != nil {
			free <- p.buf
		}
	}
	wg.Wait()
	if werr != nil {
		return werr
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if sf != nil {
		if err := sf.Truncate(pos); err != nil {
			return fmt.Errorf("export of volume %q: %w", ex.v.Name, err)
		}
		if err := sf.Sync(); err != nil {
			return fmt.Errorf("export of volume %q: %w", ex.v.Name, err)
		}
	}
	return nil
}

// emit writes one chunk of n bytes to the stream: buf's bytes, or zeros
// if !data; over zero ranges it seeks instead if sf is set.
func (ex *exporter) emit(w io.Writer, sf *os.File, buf []byte, n uint64, data bool, pos *int64) error {
	if !data {
		if sf != nil {
			if _, err := sf.Seek(int64(n), io.SeekCurrent); err != nil {
				return err
			}
			*pos += int64(n)
			ex.skipped.Add(n)
			return nil
		}
		for left := n; left > 0; {
			k := min(left, uint64(len(zeros)))
			if _, err := w.Write(zeros[:k]); err != nil {
				return err
			}
			ex.written.Add(k)
			left -= k
		}
		*pos += int64(n)
		return nil
	}
	b := buf[:n]
	if sf == nil {
		if _, err := w.Write(b); err != nil {
			return err
		}
		ex.written.Add(n)
		*pos += int64(n)
		return nil
	}
	for i := 0; i < len(b); {
		lo, hi := nextRun(b, i)
		if lo > i {
			if _, err := sf.Seek(int64(lo-i), io.SeekCurrent); err != nil {
				return err
			}
			ex.skipped.Add(uint64(lo - i))
		}
		if lo == hi {
			break
		}
		if _, err := sf.Write(b[lo:hi]); err != nil {
			return err
		}
		ex.written.Add(uint64(hi - lo))
		i = hi
	}
	*pos += int64(n)
	return nil
}

// ctxReader reads r in a goroutine of its own, into a buffer of its own,
// so that a read blocked on a pipe (whose file cannot be polled: a Close
// would not end it) ends when ctx does: the goroutine is then left
// behind, blocked, touching only its own buffer.
type ctxReader struct {
	ctx     context.Context
	r       io.Reader
	buf     []byte
	res     chan readResult
	pending bool
}

type readResult struct {
	n   int
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if c.pending {
		return 0, context.Cause(c.ctx)
	}
	n := min(len(p), len(c.buf))
	go func() {
		m, err := c.r.Read(c.buf[:n])
		c.res <- readResult{m, err}
	}()
	c.pending = true
	select {
	case r := <-c.res:
		c.pending = false
		return copy(p, c.buf[:r.n]), r.err
	case <-c.ctx.Done():
		return 0, context.Cause(c.ctx)
	}
}
