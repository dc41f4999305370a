package nbd

import "context"

// Backend is what the server exports: a set of named block devices.
//
// Its methods may be called concurrently from many connections.
type Backend interface {
	// Open returns a handle on the export called name ("" is the default
	// export, if the backend has one). It fails with an error wrapping
	// errs.ErrNotFound when there is no such export. The server opens one
	// handle per connection that enters transmission (and short-lived
	// ones to answer NBD_OPT_INFO), so Open may be called many times for
	// the same name, concurrently.
	Open(ctx context.Context, name string) (Export, error)
	// List returns the names of the exports, for NBD_OPT_LIST. The order
	// is the order shown to clients.
	List(ctx context.Context) ([]string, error)
}

// Export is an open handle on one export.
//
// Concurrency: every method but Close may be called concurrently, with
// overlapping ranges; the server imposes no ordering between requests in
// flight (NBD clients order the requests they care about).
//
// Sharing (NBD multi-conn): handles opened for the same name see the same
// data. A write completed on one handle is visible to reads on every
// other, and Flush on any handle persists every write completed on any
// handle of the export. The server advertises NBD_FLAG_CAN_MULTI_CONN on
// the strength of this contract.
//
// Ranges: the server validates every request against Size and the block
// sizes before calling, so off+len never exceeds Size and is aligned to
// the minimum block size.
//
// Errors are wrapped sentinels of package errs; the server maps them to
// NBD error values (errs.ErrReadOnly to EPERM, errs.ErrInvalid to EINVAL,
// errs.ErrNoSpace to ENOSPC, anything else to EIO).
type Export interface {
	// Size is the export's size in bytes. It does not change while the
	// handle is open.
	Size() uint64
	// ReadOnly reports whether the export refuses writes. For a read-only
	// export the server answers WRITE, TRIM and WRITE_ZEROES with EPERM
	// itself and never calls WriteAt.
	ReadOnly() bool
	// ReadAt fills p entirely with the export's bytes at off. Unwritten
	// ranges read as zeroes. There are no partial reads: either all of p
	// is filled or an error is returned.
	ReadAt(ctx context.Context, p []byte, off uint64) error
	// WriteAt writes all of p at off. With fua, the data is persistent
	// when WriteAt returns. WriteAt must not modify p or keep it after
	// returning.
	WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error
	// Flush makes every write completed so far (through any handle of
	// this export) persistent.
	Flush(ctx context.Context) error
	// Close releases the handle. The server calls it once, after the last
	// request on the handle has completed.
	Close() error
}

// Extent is a run of bytes of an export with the same allocation.
type Extent struct {
	Length uint64
	// Hole: the run is not allocated and reads as zeroes.
	Hole bool
}

// The optional abilities below are separate interfaces; an Export
// implements those it can do better than the server's fallback.

// Trimmer frees a range (NBD_CMD_TRIM). After Trim the range's content is
// unspecified until written again; a Trimmer that also implements Mapper
// should report freed ranges as holes. Without Trimmer the server does not
// advertise NBD_FLAG_SEND_TRIM.
type Trimmer interface {
	Trim(ctx context.Context, off, n uint64) error
}

// ZeroWriter writes zeroes over a range without a payload
// (NBD_CMD_WRITE_ZEROES). With mayTrim the range may be freed instead (it
// must still read as zeroes); without it the range must end up allocated.
// Without ZeroWriter the server writes buffers of zeroes with WriteAt.
type ZeroWriter interface {
	WriteZeroes(ctx context.Context, off, n uint64, fua, mayTrim bool) error
}

// Mapper reports allocation for NBD_CMD_BLOCK_STATUS (the base:allocation
// meta context). Extents returns consecutive extents starting at off,
// covering at least one byte and at most n bytes (fewer is fine: the
// client asks again for the rest). Without Mapper every range is reported
// as allocated data.
type Mapper interface {
	Extents(ctx context.Context, off, n uint64) ([]Extent, error)
}

// SparseReader is ReadAt that also tells which parts of p were holes, at
// no extra cost (for instance because the read already knew which blocks
// exist). p is filled entirely, holes with zeroes, as with ReadAt; the
// extents cover exactly len(p) bytes from off. With structured replies the
// server sends the holes as NBD_REPLY_TYPE_OFFSET_HOLE chunks instead of
// zeroes. An export whose allocation lookup costs a round trip should not
// implement it.
type SparseReader interface {
	ReadSparse(ctx context.Context, p []byte, off uint64) ([]Extent, error)
}

// BlockSizer advertises block size constraints (NBD_INFO_BLOCK_SIZE).
// min is a power of two up to 64 KiB, preferred a power of two at least
// max(min, 512), max at least preferred. The server rejects misaligned and
// oversize requests with EINVAL before they reach the export. Without
// BlockSizer the constraints are 1, 4096 and the server's MaxPayload.
type BlockSizer interface {
	BlockSize() (min, preferred, max uint32)
}

// Describer gives an export a human-readable description
// (NBD_INFO_DESCRIPTION).
type Describer interface {
	Description() string
}

// BufferPool lets the server receive WRITE payloads straight into memory
// the export owns (a shared-memory segment, say) and read READ data into
// it, avoiding a copy: the server passes the Buffer's bytes to WriteAt or
// ReadAt and releases it once the payload is consumed or sent.
type BufferPool interface {
	// Get returns a buffer of exactly n bytes, or nil when none is
	// available right now; the server then uses its own memory. Get may
	// be called concurrently and must not block for long: a connection's
	// reader calls it for WRITE payloads.
	Get(n int) Buffer
}

// Buffer is memory lent by a BufferPool.
type Buffer interface {
	Bytes() []byte
	// Release returns the buffer to its pool; the server calls it exactly
	// once and does not touch the bytes afterwards.
	Release()
}

// AsyncIO lets the server start a READ or WRITE whose payload is a Buffer
// of the export's BufferPool without a goroutine waiting for it: the
// connection's reader starts it and reads on, and the reply is queued
// when the export calls done.
type AsyncIO interface {
	// StartRead starts filling p (the Bytes of a Buffer the export's
	// BufferPool returned) with the export's bytes at off, as ReadAt
	// does, and returns true; done then gets the result exactly once,
	// maybe before StartRead returns, from any goroutine. done does not
	// block. StartRead returns false, without calling done, when it
	// cannot start the read this way; the server then calls ReadAt.
	StartRead(ctx context.Context, p []byte, off uint64, done func(error)) bool
	// StartWrite is StartRead for WriteAt: done gets the result of
	// writing p at off (durably with fua). p stays untouched until done.
	StartWrite(ctx context.Context, p []byte, off uint64, fua bool, done func(error)) bool
}
