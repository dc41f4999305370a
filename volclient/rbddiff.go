package volclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/rbddiff"
)

// DiffTransferOptions shape an ExportDiff or ImportDiff.
type DiffTransferOptions struct {
	// Version of the stream ExportDiff writes: 1 (the default; what `rbd
	// import-diff` reads) or 2. ImportDiff reads both.
	Version int
	// Force (ImportDiff): apply the diff even though the volume's content
	// is not the diff's starting point (see ImportDiff).
	Force bool
	// Source names the stream in messages (a file name, "-" for stdin).
	Source string
	// Timeout bounds each request (0: no bound but ctx's).
	Timeout time.Duration
	// Progress, if set, is called now and then with the work done and its
	// total (0 if unknown): ExportDiff the bytes of data extents read,
	// ImportDiff the bytes of the stream read.
	Progress func(done, total uint64)
}

// DiffTransfer tells what an ExportDiff or ImportDiff did; its JSON form
// is what `vlmc export-diff --json` and `vlmc import-diff --json` print.
type DiffTransfer struct {
	// Volume is the volume or snapshot exported, or the volume the diff
	// was applied to.
	Volume string `json:"volume"`
	// From and To are the diff's from- and to-snapshots ("" for none);
	// ImportDiff created To.
	From string `json:"from"`
	To   string `json:"to"`
	// Size is the size the diff gives the volume.
	Size uint64 `json:"size"`
	// Resized (ImportDiff): the volume's size was changed to Size.
	Resized bool `json:"resized,omitempty"`
	// Writes and Zeros count the data and zero records; DataBytes and
	// ZeroBytes their lengths.
	Writes    int    `json:"writes"`
	Zeros     int    `json:"zeros"`
	DataBytes uint64 `json:"data_bytes"`
	ZeroBytes uint64 `json:"zero_bytes"`
	// StreamBytes is the length of the diff stream.
	StreamBytes int64   `json:"stream_bytes"`
	Seconds     float64 `json:"seconds"`
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// allZero tells whether p holds only zero bytes.
func allZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// run is a range [lo, hi) of a buffer, all zeros or not.
type run struct {
	lo, hi int
	zero   bool
}

// zeroGrainDiff is the unit in which data read for a diff is looked at
// for zeros, and minZeroRun the shortest zero range kept apart from the
// data around it (a shorter one costs more as a record than as data).
const (
	zeroGrainDiff = 4096
	minZeroRun    = 64 << 10
)

// zeroRuns splits p into runs of data and zeros: a diff carries a
// changed block's zero ranges as zero records, as rbd export-diff (which
// knows the written extents) carries only what was written.
func zeroRuns(p []byte) []run {
	var rs []run
	for lo := 0; lo < len(p); {
		hi := min(lo+zeroGrainDiff, len(p))
		z := allZero(p[lo:hi])
		if k := len(rs) - 1; k >= 0 && rs[k].zero == z {
			rs[k].hi = hi
		} else {
			rs = append(rs, run{lo, hi, z})
		}
		lo = hi
	}
	// Short zero runs between data go with the data.
	out := rs[:0]
	for i, r := range rs {
		if r.zero && r.hi-r.lo < minZeroRun && i > 0 && i < len(rs)-1 {
			r.zero = false
		}
		if k := len(out) - 1; k >= 0 && out[k].zero == r.zero {
			out[k].hi = r.hi
		} else {
			out = append(out, r)
		}
	}
	return out
}

// ExportDiff writes to w, in RBD's diff format (package rbddiff), how
// volume or snapshot name differs from snapshot from ("": from nothing,
// a full image): an 'f' record naming from (if given), a 't' record
// naming name if it is a snapshot, its size ('s'), then a 'w' record with
// the data of every changed range (read through a session of name, in
// pieces of at most MaxIO bytes; the ranges of 64 KiB or more inside them
// that read as zeros become 'z' records: the maps know whole blocks,
// `rbd export-diff` the extents written) and a 'z' record for every range
// that became zero, and the end record. The changed ranges come from the
// maps (Diff). Export a snapshot: a volume written meanwhile gives a diff
// of no single moment (one resized meanwhile fails with errs.ErrBusy).
func (c *Client) ExportDiff(ctx context.Context, name, from string, w io.Writer, o DiffTransferOptions) (DiffTransfer, error) {
	start := time.Now()
	st := DiffTransfer{Volume: name, From: from}
	call := func(fn func(ctx context.Context) error) error {
		cctx, cancel := reqCtx(ctx, o.Timeout)
		defer cancel()
		return fn(cctx)
	}
	var vi Info
	if err := call(func(ctx context.Context) (err error) { vi, err = c.Info(ctx, name); return err }); err != nil {
		return st, err
	}
	if from != "" {
		var fi Info
		if err := call(func(ctx context.Context) (err error) { fi, err = c.Info(ctx, from); return err }); err != nil {
			return st, fmt.Errorf("export-diff of volume %q from snapshot %q: %w", name, from, err)
		}
		if !fi.Snapshot {
			return st, fmt.Errorf("export-diff of volume %q: %q is not a snapshot: %w", name, from, errs.ErrInvalid)
		}
	}
	var rep DiffReport
	if err := call(func(ctx context.Context) (err error) { rep, err = c.DiffReport(ctx, name, from); return err }); err != nil {
		return st, err
	}
	if rep.Size != vi.Size {
		return st, fmt.Errorf("volume %q: resized during export-diff (%d bytes, then %d): %w", name, vi.Size, rep.Size, errs.ErrBusy)
	}
	if vi.Snapshot {
		st.To = name
	}
	st.Size = vi.Size
	cw := &countingWriter{w: w}
	dw, err := rbddiff.NewWriter(cw, rbddiff.Header{Version: o.Version, From: from, To: st.To, Size: vi.Size, HasSize: true})
	if err != nil {
		return st, err
	}
	var v *Volume
	if rep.DataBytes > 0 {
		if err := call(func(ctx context.Context) (err error) { v, err = c.OpenSession(ctx, name); return err }); err != nil {
			return st, err
		}
		defer v.Close(context.WithoutCancel(ctx))
		if v.Size != vi.Size {
			return st, fmt.Errorf("volume %q: resized during export-diff (%d bytes, then %d): %w", name, vi.Size, v.Size, errs.ErrBusy)
		}
	}
	var buf []byte
	done := uint64(0)
	for _, x := range rep.Extents {
		if x.Zero {
			if err := dw.Zero(x.Offset, x.Size); err != nil {
				return st, err
			}
			st.Zeros++
			st.ZeroBytes += x.Size
			continue
		}
		for pos, end := x.Offset, x.Offset+x.Size; pos < end; {
			n := min(end-pos, MaxIO)
			if uint64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			p := buf[:n]
			if err := call(func(ctx context.Context) error { return v.ReadAt(ctx, p, pos) }); err != nil {
				return st, fmt.Errorf("export-diff of volume %q: %w", name, err)
			}
			for _, r := range zeroRuns(p) {
				q := p[r.lo:r.hi]
				if r.zero {
					err = dw.Zero(pos+uint64(r.lo), uint64(len(q)))
					st.Zeros++
					st.ZeroBytes += uint64(len(q))
				} else {
					err = dw.Write(pos+uint64(r.lo), q)
					st.Writes++
					st.DataBytes += uint64(len(q))
				}
				if err != nil {
					return st, err
				}
			}
			pos += n
			done += n
			if o.Progress != nil {
				o.Progress(done, rep.DataBytes)
			}
		}
	}
	if err := dw.Close(); err != nil {
		return st, err
	}
	st.StreamBytes, st.Seconds = cw.n, time.Since(start).Seconds()
	return st, nil
}

// ImportDiff applies a diff in RBD's diff format (from `rbd export-diff`
// or ExportDiff) read from r to volume name, as `rbd import-diff` does,
// and then takes the to-snapshot the diff names:
//
//   - the diff's from-snapshot, if it names one, must exist
//     (errs.ErrNotFound naming it) and be a snapshot; and the volume must
//     hold its content — the maps say so: Diff(name, from) is empty, so
//     that what the diff changes is all that differs afterwards. A diff
//     from nothing needs a volume with nothing allocated. This is
//     stronger than rbd, which looks only for a snapshot of that name on
//     the image; o.Force skips it (not the existence of the snapshot);
//   - the to-snapshot must not exist (errs.ErrExists naming it), and its
//     name must be a valid volume name;
//   - the volume is resized to the diff's size if it differs (shrunk too,
//     as rbd does);
//   - 'w' records are written (a piece that is all zeros is zeroed
//     instead, keeping the volume thin), 'z' records zero their range:
//     whole blocks are trimmed, the parts of blocks at the ends written
//     with zeros (unless the block holds nothing);
//   - the volume is flushed, then the to-snapshot taken.
//
// A stream that breaks the format (truncated, an unknown tag in version
// 1, a record past the size...) is refused with the byte offset where it
// breaks (rbddiff.Error). When r can seek (a regular file) the whole
// stream is checked before anything is changed; a pipe is checked as it
// is applied, and a stream found bad half-way leaves the volume partly
// written (the error says so). A failed import takes no snapshot.
func (c *Client) ImportDiff(ctx context.Context, r io.Reader, name string, o DiffTransferOptions) (DiffTransfer, error) {
	start := time.Now()
	st := DiffTransfer{Volume: name}
	src := o.Source
	if src == "" || src == "-" {
		src = "stdin"
	}
	call := func(fn func(ctx context.Context) error) error {
		cctx, cancel := reqCtx(ctx, o.Timeout)
		defer cancel()
		return fn(cctx)
	}
	var vi Info
	if err := call(func(ctx context.Context) (err error) { vi, err = c.Info(ctx, name); return err }); err != nil {
		return st, fmt.Errorf("import-diff: %w", err)
	}
	if vi.Snapshot {
		return st, fmt.Errorf("import-diff: volume %q is a snapshot: %w", name, errs.ErrReadOnly)
	}

	// A stream that can seek is checked whole first.
	var total uint64
	seeker, _ := r.(io.Seeker)
	var origin int64
	if seeker != nil {
		var err error
		if origin, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
		}
	}
	if seeker != nil {
		end, err := seeker.Seek(0, io.SeekEnd)
		if err == nil {
			_, err = seeker.Seek(origin, io.SeekStart)
		}
		if err != nil {
			return st, fmt.Errorf("import-diff from %s: %w", src, err)
		}
		total = uint64(end - origin)
		if err := scanDiff(r, name, vi.Size, src); err != nil {
			return st, err
		}
		if _, err := seeker.Seek(origin, io.SeekStart); err != nil {
			return st, fmt.Errorf("import-diff from %s: %w", src, err)
		}
	}
	rd, err := rbddiff.NewReader(r)
	if err != nil {
		return st, fmt.Errorf("import-diff from %s: %w", src, err)
	}
	h := rd.Header()
	st.From, st.To, st.Size = h.From, h.To, vi.Size
	if h.HasSize {
		st.Size = h.Size
	}
	if err := c.checkDiffBase(ctx, call, name, h, o.Force); err != nil {
		return st, err
	}
	if st.Size != vi.Size {
		err := call(func(ctx context.Context) error {
			if st.Size < vi.Size {
				return c.ResizeForce(ctx, name, st.Size)
			}
			return c.Resize(ctx, name, st.Size)
		})
		if err != nil {
			return st, fmt.Errorf("import-diff: resize of volume %q from %d to %d bytes: %w", name, vi.Size, st.Size, err)
		}
		st.Resized = true
	}
	var v *Volume
	if err := call(func(ctx context.Context) (err error) { v, err = c.OpenSession(ctx, name); return err }); err != nil {
		return st, fmt.Errorf("import-diff: %w", err)
	}
	defer v.Close(context.WithoutCancel(ctx))
	if v.Size != st.Size {
		return st, fmt.Errorf("import-diff: volume %q is %d bytes, not the %d of the diff (resized meanwhile): %w", name, v.Size, st.Size, errs.ErrBusy)
	}
	zn := min(uint64(v.BlockSize), 1<<20)
	ap := &applier{v: v, call: call, zeros: make([]byte, zn), buf: make([]byte, zn)}
	applied := 0
	partly := func(err error) error {
		if applied > 0 {
			return fmt.Errorf("%w (volume %q is partly written: %d records applied; no snapshot taken)", err, name, applied)
		}
		return err
	}
	buf := make([]byte, MaxIO)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, partly(fmt.Errorf("import-diff from %s: %w", src, err))
		}
		if rec.End() > v.Size {
			return st, partly(fmt.Errorf("import-diff from %s: rbd diff: byte %d: %q record of %d bytes at %d: beyond volume %q's size %d: %w",
				src, rec.At, rec.Kind, rec.Length, rec.Offset, name, v.Size, errs.ErrInvalid))
		}
		where := func(err error) error {
			return partly(fmt.Errorf("import-diff: volume %q: the %q record at byte %d of %s (%d bytes at %d): %w",
				name, rec.Kind, rec.At, src, rec.Length, rec.Offset, err))
		}
		if rec.Kind == rbddiff.TagZero {
			if err := ap.zero(ctx, rec.Offset, rec.Length); err != nil {
				return st, where(err)
			}
			st.Zeros++
			st.ZeroBytes += rec.Length
		} else {
			for pos := rec.Offset; pos < rec.End(); {
				p := buf[:min(rec.End()-pos, MaxIO)]
				if _, err := io.ReadFull(rd, p); err != nil {
					return st, partly(fmt.Errorf("import-diff from %s: %w", src, err))
				}
				if allZero(p) {
					err = ap.zero(ctx, pos, uint64(len(p)))
				} else {
					err = call(func(ctx context.Context) error { return v.WriteAt(ctx, p, pos, false) })
				}
				if err != nil {
					return st, where(err)
				}
				pos += uint64(len(p))
			}
			st.Writes++
			st.DataBytes += rec.Length
		}
		applied++
		if o.Progress != nil {
			o.Progress(uint64(rd.Offset()), total)
		}
	}
	if err := call(v.Flush); err != nil {
		return st, partly(fmt.Errorf("import-diff: volume %q: flush: %w", name, err))
	}
	st.StreamBytes = rd.Offset()
	if h.To != "" {
		if err := call(func(ctx context.Context) error { return c.Snapshot(ctx, name, h.To) }); err != nil {
			return st, fmt.Errorf("import-diff: volume %q written; its snapshot %q: %w", name, h.To, err)
		}
	}
	st.Seconds = time.Since(start).Seconds()
	return st, nil
}

// scanDiff reads a whole stream, skipping the data, and checks its data
// records against a volume of size bytes if it gives no size.
func scanDiff(r io.Reader, name string, size uint64, src string) error {
	rd, err := rbddiff.NewReader(r)
	if err != nil {
		return fmt.Errorf("import-diff from %s: %w", src, err)
	}
	for {
		rec, err := rd.Next()
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return fmt.Errorf("import-diff from %s: %w", src, err)
		case !rd.Header().HasSize && rec.End() > size:
			return fmt.Errorf("import-diff from %s: rbd diff: byte %d: %q record of %d bytes at %d: beyond volume %q's size %d: %w",
				src, rec.At, rec.Kind, rec.Length, rec.Offset, name, size, errs.ErrInvalid)
		}
	}
}

// checkDiffBase checks the diff's snapshots against volume name (see
// ImportDiff).
func (c *Client) checkDiffBase(ctx context.Context, call func(func(context.Context) error) error, name string, h rbddiff.Header, force bool) error {
	if h.From != "" {
		var fi Info
		err := call(func(ctx context.Context) (err error) { fi, err = c.Info(ctx, h.From); return err })
		switch {
		case errors.Is(err, errs.ErrNotFound):
			return fmt.Errorf("import-diff: the diff starts from snapshot %q, which does not exist: %w", h.From, errs.ErrNotFound)
		case err != nil:
			return fmt.Errorf("import-diff: the diff's start, snapshot %q: %w", h.From, err)
		case !fi.Snapshot:
			return fmt.Errorf("import-diff: the diff starts from %q, which is not a snapshot: %w", h.From, errs.ErrInvalid)
		}
	}
	if h.To != "" {
		err := call(func(ctx context.Context) error { _, err := c.Info(ctx, h.To); return err })
		switch {
		case err == nil:
			return fmt.Errorf("import-diff: the diff ends at snapshot %q, which exists already: %w", h.To, errs.ErrExists)
		case errors.Is(err, errs.ErrInvalid):
			return fmt.Errorf("import-diff: the diff ends at snapshot %q, not a valid volume name: %w", h.To, err)
		case !errors.Is(err, errs.ErrNotFound):
			return fmt.Errorf("import-diff: snapshot %q: %w", h.To, err)
		}
	}
	if force {
		return nil
	}
	var rep DiffReport
	if err := call(func(ctx context.Context) (err error) { rep, err = c.DiffReport(ctx, name, h.From); return err }); err != nil {
		return fmt.Errorf("import-diff: %w", err)
	}
	if len(rep.Extents) == 0 {
		return nil
	}
	if h.From == "" {
		return fmt.Errorf("import-diff: the diff starts from nothing, and volume %q holds data (%d bytes allocated): import it into a new volume, or give --force to write over: %w",
			name, rep.DataBytes, errs.ErrInvalid)
	}
	return fmt.Errorf("import-diff: volume %q changed since snapshot %q, where the diff starts (%d bytes of data and %d of zeros differ, see vlmc diff %s --from %s): roll it back, or give --force to apply the diff anyway: %w",
		name, h.From, rep.DataBytes, rep.ZeroBytes, name, h.From, errs.ErrInvalid)
}

// applier zeroes ranges of a volume.
type applier struct {
	v     *Volume
	call  func(func(context.Context) error) error
	zeros []byte // zeros to write
	buf   []byte // as large, to read into
}

// zero makes [off, off+n) read as zeros: whole blocks trimmed (the last
// block of the volume counts as whole), the parts of blocks at the ends
// written with zeros unless the block holds nothing.
func (a *applier) zero(ctx context.Context, off, n uint64) error {
	if n == 0 {
		return nil
	}
	bs, end := uint64(a.v.BlockSize), off+n
	lo, hi := (off+bs-1)/bs*bs, end/bs*bs
	if end == a.v.Size {
		hi = end
	}
	if lo >= hi {
		return a.writeZeros(ctx, off, end)
	}
	if err := a.call(func(ctx context.Context) error { return a.v.Trim(ctx, lo, hi-lo) }); err != nil {
		return err
	}
	if err := a.writeZeros(ctx, off, lo); err != nil {
		return err
	}
	return a.writeZeros(ctx, hi, end)
}

// writeZeros writes zeros over [from, to), block by block, leaving out
// the blocks that hold nothing (they read as zeros already).
func (a *applier) writeZeros(ctx context.Context, from, to uint64) error {
	bs := uint64(a.v.BlockSize)
	for pos := from; pos < to; {
		blk := pos / bs * bs
		end := min(blk+bs, to)
		var ext []Extent
		err := a.call(func(ctx context.Context) (err error) {
			ext, err = a.v.Allocated(ctx, blk, min(blk+bs, a.v.Size)-blk)
			return err
		})
		if err != nil {
			return err
		}
		// In a block that holds data, the pieces that read as zeros
		// already are left alone: a read costs less than a write (which
		// may copy the block first).
		for len(ext) > 0 && pos < end {
			n := min(end-pos, uint64(len(a.zeros)))
			p := a.buf[:n]
			if err := a.call(func(ctx context.Context) error { return a.v.ReadAt(ctx, p, pos) }); err != nil {
				return err
			}
			if !allZero(p) {
				if err := a.call(func(ctx context.Context) error { return a.v.WriteAt(ctx, a.zeros[:n], pos, false) }); err != nil {
					return err
				}
			}
			pos += n
		}
		pos = end
	}
	return nil
}
