// Package rbddiff reads and writes RBD's diff format, the stream of
// `rbd export-diff` and `rbd import-diff` (Ceph's doc/dev/rbd-diff.rst),
// so that incremental backups move between Archipelago and Ceph.
//
// A stream starts with a banner, "rbd diff v1\n" or "rbd diff v2\n",
// followed by records. Each record starts with a one-byte tag; integers
// are little-endian. First come the metadata records, in any order, each
// at most once:
//
//	'f' from snapshot: le32 length, name — the snapshot the diff starts from
//	                   (absent: from nothing, a full image)
//	't' to snapshot:   le32 length, name — the snapshot it ends at (absent:
//	                   the image's head); import-diff creates it
//	's' size:          le64 — the image's size at the end
//
// then the data records, in any number:
//
//	'w' updated data:  le64 offset, le64 length, length bytes of data
//	'z' zero data:     le64 offset, le64 length — the range reads as zeros
//
// and last 'e', the end (no payload). Version 2 puts a le64 length of
// the record's payload after every tag but 'e' (4+length for f and t, 8
// for s, 16+length for w, 16 for z), so that a reader can skip a tag it
// does not know; it also has 'p', the to-snapshot's protection status
// (one byte), which `rbd export` writes into its "rbd image v2" streams.
// `rbd export-diff` writes version 1 and `rbd import-diff` reads only
// version 1 (checked against Ceph 16's tools); version 2 appears inside
// `rbd export --export-format 2` images.
//
// This package is stricter than rbd where rbd's leniency would hide damage:
// a version 1 stream with a tag it does not know (rbd ignores the byte
// and reads on from the next one), a metadata record after a data record
// or given twice, a data record past the size, a version 2 length that
// does not match its record, a name longer than 4096 bytes (rbd's limit)
// or empty, a stream that ends without 'e' or has bytes after it: each is
// an error naming the byte offset in the stream (errs.ErrInvalid).
package rbddiff

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/archipelago-go/archipelago/errs"
)

// The banners of the two versions.
const (
	BannerV1 = "rbd diff v1\n"
	BannerV2 = "rbd diff v2\n"
)

// Record tags.
const (
	TagFrom      = 'f'
	TagTo        = 't'
	TagSize      = 's'
	TagProtected = 'p' // version 2 only
	TagWrite     = 'w'
	TagZero      = 'z'
	TagEnd       = 'e'
)

// MaxNameLen is the longest snapshot name a stream may carry (rbd reads
// at most 4096 bytes).
const MaxNameLen = 4096

// Header is what a stream's metadata records say.
type Header struct {
	// Version is 1 or 2 (0 in NewWriter means 1).
	Version int
	// From is the snapshot the diff starts from, "" for none (a full
	// image); To the snapshot it ends at, "" for the image's head.
	From, To string
	// Size is the image's size at the end, if HasSize.
	Size    uint64
	HasSize bool
	// Protected is the to-snapshot's protection status, if HasProtected
	// (version 2 only).
	Protected, HasProtected bool
}

// Record is a data record: Length bytes at Offset of the image are data
// (Kind TagWrite; the Reader then reads them) or zeros (TagZero).
type Record struct {
	Kind           byte
	Offset, Length uint64
	// At is the byte offset of the record's tag in the stream.
	At int64
}

// End is the byte offset just past the record's range in the image.
func (r Record) End() uint64 { return r.Offset + r.Length }

// Reader reads a diff stream: NewReader reads the banner and the
// metadata, Next the data records one by one, and Read the data of the
// current 'w' record.
type Reader struct {
	br  *bufio.Reader
	src io.Reader
	off int64 // bytes of the stream consumed
	// seeker, if the source can seek: a record's data is skipped by
	// seeking, within the stream's known length.
	seeker      io.Seeker
	base, limit int64 // the source's offset of the stream's start, and its length
	hdr         Header
	seen        map[byte]bool
	cur         Record
	left        uint64 // data of cur not read yet
	first       *Record
	done        bool
	err         error
}

// NewReader reads the banner and metadata records of a stream. A source
// that can seek (a regular file) has the data records it skips (Next
// before Read) skipped by seeking, and its truncation found without
// reading the data.
func NewReader(src io.Reader) (*Reader, error) {
	r := &Reader{src: src, br: bufio.NewReaderSize(src, 64<<10), seen: map[byte]bool{}}
	if s, ok := src.(io.Seeker); ok {
		if cur, err := s.Seek(0, io.SeekCurrent); err == nil {
			if end, err := s.Seek(0, io.SeekEnd); err == nil {
				if _, err := s.Seek(cur, io.SeekStart); err == nil && end >= cur {
					r.seeker, r.base, r.limit = s, cur, end-cur
				}
			}
		}
	}
	var banner [len(BannerV1)]byte
	if err := r.full(banner[:], "the banner"); err != nil {
		return nil, err
	}
	switch string(banner[:]) {
	case BannerV1:
		r.hdr.Version = 1
	case BannerV2:
		r.hdr.Version = 2
	default:
		return nil, r.errorf(0, "not an RBD diff: it starts with %q, not %q or %q", banner[:], BannerV1, BannerV2)
	}
	for {
		at := r.off
		tag, n, err := r.tag()
		if err != nil {
			return nil, err
		}
		switch tag {
		case TagWrite, TagZero, TagEnd:
			rec, err := r.data(at, tag, n)
			if err != nil {
				return nil, err
			}
			r.first = &rec
			return r, nil
		}
		if err := r.meta(at, tag, n); err != nil {
			return nil, err
		}
	}
}

// Header returns what the metadata records said.
func (r *Reader) Header() Header { return r.hdr }

// Offset is how many bytes of the stream were consumed.
func (r *Reader) Offset() int64 { return r.off }

// Next returns the next data record, skipping what is left of the
// previous one's data; io.EOF once the end record is read (and nothing
// follows it).
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	if err := r.skip(); err != nil {
		return Record{}, r.fail(err)
	}
	var rec Record
	if r.first != nil {
		rec, r.first = *r.first, nil
	} else {
		if r.done {
			return Record{}, io.EOF
		}
		for {
			at := r.off
			tag, n, err := r.tag()
			if err != nil {
				return Record{}, r.fail(err)
			}
			switch tag {
			case TagFrom, TagTo, TagSize, TagProtected:
				return Record{}, r.fail(r.errorf(at, "%q record after the data records (the metadata comes first)", tag))
			}
			if rec, err = r.data(at, tag, n); err != nil {
				return Record{}, r.fail(err)
			}
			if rec.Kind != 0 {
				break
			}
		}
	}
	if rec.Kind == TagEnd {
		r.done = true
		// Nothing may follow the end: a second stream or garbage there
		// means the input is not what it seems.
		if _, err := r.br.ReadByte(); err == nil {
			return Record{}, r.fail(r.errorf(r.off, "data after the end record (at byte %d)", rec.At))
		} else if err != io.EOF {
			return Record{}, r.fail(r.ioError(err))
		}
		return Record{}, io.EOF
	}
	r.cur, r.left = rec, 0
	if rec.Kind == TagWrite {
		r.left = rec.Length
	}
	return rec, nil
}

// Read reads the data of the current 'w' record; io.EOF at its end.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		return 0, io.EOF
	}
	if uint64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.br.Read(p)
	r.off += int64(n)
	r.left -= uint64(n)
	switch {
	case err == io.EOF:
		return n, r.fail(r.truncated())
	case err != nil:
		return n, r.fail(r.ioError(err))
	}
	return n, nil
}

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// skip passes over what is left of the current record's data.
func (r *Reader) skip() error {
	if r.left == 0 {
		return nil
	}
	if r.seeker != nil {
		buffered := min(uint64(r.br.Buffered()), r.left)
		r.br.Discard(int(buffered))
		r.off += int64(buffered)
		r.left -= buffered
		if r.left == 0 {
			return nil
		}
		if r.left > uint64(r.limit-r.off) {
			r.off = r.limit
			return r.truncated()
		}
		if _, err := r.seeker.Seek(r.base+r.off+int64(r.left), io.SeekStart); err != nil {
			return r.ioError(err)
		}
		r.off += int64(r.left)
		r.left = 0
		r.br.Reset(r.src)
		return nil
	}
	n, err := io.CopyN(io.Discard, r.br, int64(min(r.left, 1<<62)))
	r.off += n
	r.left -= uint64(n)
	switch {
	case err == io.EOF:
		return r.truncated()
	case err != nil:
		return r.ioError(err)
	}
	return nil
}

func (r *Reader) truncated() error {
	return r.errorf(r.off, "the input ends inside the %q record at byte %d (%d bytes of its data missing): truncated",
		r.cur.Kind, r.cur.At, r.left)
}

// tag reads a record's tag and, in version 2, its payload length (n;
// -1 in version 1).
func (r *Reader) tag() (tag byte, n int64, err error) {
	at := r.off
	var b [1]byte
	if err := r.full(b[:], "a record tag (the end record 'e' is missing)"); err != nil {
		return 0, 0, err
	}
	tag, n = b[0], -1
	if r.hdr.Version == 2 && tag != TagEnd {
		var l [8]byte
		if err := r.full(l[:], fmt.Sprintf("the length of the %q record at byte %d", tag, at)); err != nil {
			return 0, 0, err
		}
		u := binary.LittleEndian.Uint64(l[:])
		if u > 1<<62 {
			return 0, 0, r.errorf(at, "%q record of %d bytes", tag, u)
		}
		n = int64(u)
	}
	return tag, n, nil
}

// meta reads the payload of metadata record tag (at byte at; n its
// version 2 length).
func (r *Reader) meta(at int64, tag byte, n int64) error {
	switch tag {
	case TagFrom, TagTo, TagSize, TagProtected:
		if r.seen[tag] {
			return r.errorf(at, "a second %q record", tag)
		}
		r.seen[tag] = true
	}
	switch tag {
	case TagFrom, TagTo:
		name, err := r.name(at, tag, n)
		if err != nil {
			return err
		}
		if tag == TagFrom {
			r.hdr.From = name
		} else {
			r.hdr.To = name
		}
	case TagSize:
		if err := r.length(at, tag, n, 8); err != nil {
			return err
		}
		v, err := r.u64(at, tag)
		if err != nil {
			return err
		}
		r.hdr.Size, r.hdr.HasSize = v, true
	case TagProtected:
		if r.hdr.Version != 2 {
			return r.errorf(at, "unknown record tag %q (%#x) in a version 1 diff", tag, tag)
		}
		if err := r.length(at, tag, n, 1); err != nil {
			return err
		}
		var b [1]byte
		if err := r.full(b[:], fmt.Sprintf("the %q record at byte %d", tag, at)); err != nil {
			return err
		}
		if b[0] > 1 {
			return r.errorf(at, "protection status %d, not 0 or 1", b[0])
		}
		r.hdr.Protected, r.hdr.HasProtected = b[0] == 1, true
	default:
		return r.unknown(at, tag, n)
	}
	return nil
}

// unknown skips a version 2 record of a tag this package does not know;
// in version 1 it is an error.
func (r *Reader) unknown(at int64, tag byte, n int64) error {
	if r.hdr.Version != 2 {
		return r.errorf(at, "unknown record tag %q (%#x) in a version 1 diff", tag, tag)
	}
	r.cur, r.left = Record{Kind: tag, At: at}, uint64(n)
	return r.skip()
}

// data reads the payload of data or end record tag; a record of a tag
// skipped (version 2) has Kind 0.
func (r *Reader) data(at int64, tag byte, n int64) (Record, error) {
	rec := Record{Kind: tag, At: at}
	switch tag {
	case TagEnd:
		return rec, nil
	case TagWrite, TagZero:
	default:
		return Record{}, r.unknown(at, tag, n)
	}
	var b [16]byte
	if err := r.full(b[:], fmt.Sprintf("the %q record at byte %d", tag, at)); err != nil {
		return Record{}, err
	}
	rec.Offset, rec.Length = binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
	want := int64(16)
	if tag == TagWrite {
		want += int64(min(rec.Length, 1<<62))
	}
	if n >= 0 && n != want {
		return Record{}, r.errorf(at, "%q record of %d bytes says its payload is %d bytes", tag, want, n)
	}
	switch {
	case rec.Offset+rec.Length < rec.Offset:
		return Record{}, r.errorf(at, "%q record of %d bytes at %d: the range overflows", tag, rec.Length, rec.Offset)
	case r.hdr.HasSize && rec.End() > r.hdr.Size:
		return Record{}, r.errorf(at, "%q record of %d bytes at %d: beyond the image's size %d", tag, rec.Length, rec.Offset, r.hdr.Size)
	}
	return rec, nil
}

func (r *Reader) name(at int64, tag byte, n int64) (string, error) {
	var l [4]byte
	if err := r.full(l[:], fmt.Sprintf("the %q record at byte %d", tag, at)); err != nil {
		return "", err
	}
	size := binary.LittleEndian.Uint32(l[:])
	switch {
	case size == 0:
		return "", r.errorf(at, "%q record with an empty name", tag)
	case size > MaxNameLen:
		return "", r.errorf(at, "%q record with a name of %d bytes (at most %d)", tag, size, MaxNameLen)
	case n >= 0 && n != 4+int64(size):
		return "", r.errorf(at, "%q record of %d bytes says its payload is %d bytes", tag, 4+size, n)
	}
	b := make([]byte, size)
	if err := r.full(b, fmt.Sprintf("the name in the %q record at byte %d", tag, at)); err != nil {
		return "", err
	}
	return string(b), nil
}

func (r *Reader) length(at int64, tag byte, n, want int64) error {
	if n >= 0 && n != want {
		return r.errorf(at, "%q record says its payload is %d bytes, not %d", tag, n, want)
	}
	return nil
}

func (r *Reader) u64(at int64, tag byte) (uint64, error) {
	var b [8]byte
	if err := r.full(b[:], fmt.Sprintf("the %q record at byte %d", tag, at)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// full reads len(b) bytes of what; the input ending first is an error
// at the byte where it ends.
func (r *Reader) full(b []byte, what string) error {
	n, err := io.ReadFull(r.br, b)
	r.off += int64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return r.errorf(r.off, "the input ends inside %s: truncated", what)
	case err != nil:
		return r.ioError(err)
	}
	return nil
}

func (r *Reader) ioError(err error) error {
	return fmt.Errorf("rbd diff: reading byte %d: %w", r.off, err)
}

// Error is a stream that breaks the format, at byte At.
type Error struct {
	At  int64
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("rbd diff: byte %d: %s", e.At, e.Msg) }

// Unwrap makes every format error an errs.ErrInvalid.
func (e *Error) Unwrap() error { return errs.ErrInvalid }

func (r *Reader) errorf(at int64, format string, args ...any) error {
	return &Error{At: at, Msg: fmt.Sprintf(format, args...)}
}

// Writer writes a diff stream: NewWriter the banner and the metadata,
// Write and Zero the data records, Close the end record.
type Writer struct {
	w      io.Writer
	hdr    Header
	closed bool
	err    error
	buf    [1 + 8 + 16]byte
}

// NewWriter writes the banner and metadata records of h (h.From or h.To
// "": no such record) to w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if h.Version == 0 {
		h.Version = 1
	}
	if h.Version != 1 && h.Version != 2 {
		return nil, fmt.Errorf("rbd diff: version %d (1 or 2): %w", h.Version, errs.ErrInvalid)
	}
	if h.HasProtected && h.Version != 2 {
		return nil, fmt.Errorf("rbd diff: a protection status needs version 2: %w", errs.ErrInvalid)
	}
	for _, n := range []string{h.From, h.To} {
		if len(n) > MaxNameLen {
			return nil, fmt.Errorf("rbd diff: snapshot name of %d bytes (at most %d): %w", len(n), MaxNameLen, errs.ErrInvalid)
		}
	}
	wr := &Writer{w: w, hdr: h}
	b := []byte(BannerV1)
	if h.Version == 2 {
		b = []byte(BannerV2)
	}
	for _, m := range []struct {
		tag  byte
		name string
	}{{TagFrom, h.From}, {TagTo, h.To}} {
		if m.name != "" {
			b = wr.head(b, m.tag, 4+uint64(len(m.name)))
			b = binary.LittleEndian.AppendUint32(b, uint32(len(m.name)))
			b = append(b, m.name...)
		}
	}
	if h.HasProtected {
		b = wr.head(b, TagProtected, 1)
		p := byte(0)
		if h.Protected {
			p = 1
		}
		b = append(b, p)
	}
	if h.HasSize {
		b = wr.head(b, TagSize, 8)
		b = binary.LittleEndian.AppendUint64(b, h.Size)
	}
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("rbd diff: %w", err)
	}
	return wr, nil
}

// head appends a record's tag and, in version 2, its payload length.
func (w *Writer) head(b []byte, tag byte, n uint64) []byte {
	b = append(b, tag)
	if w.hdr.Version == 2 {
		b = binary.LittleEndian.AppendUint64(b, n)
	}
	return b
}

func (w *Writer) check(off, n uint64) error {
	switch {
	case w.err != nil:
		return w.err
	case w.closed:
		return fmt.Errorf("rbd diff: record after the end: %w", errs.ErrInvalid)
	case off+n < off:
		return fmt.Errorf("rbd diff: range of %d bytes at %d overflows: %w", n, off, errs.ErrInvalid)
	case w.hdr.HasSize && off+n > w.hdr.Size:
		return fmt.Errorf("rbd diff: range of %d bytes at %d beyond the image's size %d: %w", n, off, w.hdr.Size, errs.ErrInvalid)
	}
	return nil
}

func (w *Writer) record(tag byte, off, n uint64, data []byte) error {
	if err := w.check(off, n); err != nil {
		return err
	}
	payload := uint64(16)
	if tag == TagWrite {
		payload += n
	}
	b := w.head(w.buf[:0], tag, payload)
	b = binary.LittleEndian.AppendUint64(b, off)
	b = binary.LittleEndian.AppendUint64(b, n)
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("rbd diff: %w", err)
		return w.err
	}
	if len(data) > 0 {
		if _, err := w.w.Write(data); err != nil {
			w.err = fmt.Errorf("rbd diff: %w", err)
			return w.err
		}
	}
	return nil
}

// Write writes a 'w' record: p is the data at off.
func (w *Writer) Write(off uint64, p []byte) error {
	return w.record(TagWrite, off, uint64(len(p)), p)
}

// Zero writes a 'z' record: [off, off+n) reads as zeros.
func (w *Writer) Zero(off, n uint64) error {
	return w.record(TagZero, off, n, nil)
}

// Close writes the end record (it does not close the underlying writer).
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	w.closed = true
	if _, err := w.w.Write([]byte{TagEnd}); err != nil {
		w.err = fmt.Errorf("rbd diff: %w", err)
		return w.err
	}
	return nil
}

// IsFormatError tells whether err is a stream breaking the format (as
// opposed to an error of the source).
func IsFormatError(err error) bool {
	var fe *Error
	return errors.As(err, &fe)
}
