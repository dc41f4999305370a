// Package nbdexport is the block endpoint (nbdd): it serves every volume by
// name over NBD, turning NBD requests into volume requests to vlmcd
// through the segment. Snapshots are exported read-only. Block status
// comes from the volume's map: unwritten ranges are holes that read as
// zeros.
package nbdexport

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/nbd"
	"github.com/archipelago-go/archipelago/volclient"
)

// MaxIO is the largest NBD READ or WRITE the endpoint takes (advertised
// as the maximum block size).
const MaxIO = volclient.MaxIO

// Backend exports the volumes vlmcd serves.
type Backend struct {
	vc *volclient.Client
}

var _ nbd.Backend = (*Backend)(nil)

// New returns a backend over a volume client.
func New(vc *volclient.Client) *Backend { return &Backend{vc: vc} }

// Open implements nbd.Backend: the export is the volume of that name, and
// the connection a session of it (volclient.Open) until Close; the mapper
// gives a lock the connection's writes took back when the last session
// that may write ends. If the client leaves while a write waits for
// another host's lock, the session is marked gone (volclient.Volume.Gone)
// and the wait is cancelled.
func (b *Backend) Open(ctx context.Context, name string) (nbd.Export, error) {
	v, err := b.vc.OpenSession(ctx, name)
	if err != nil {
		return nil, err
	}
	return &export{v: v, vc: b.vc}, nil
}

// List implements nbd.Backend: every volume and snapshot.
func (b *Backend) List(ctx context.Context) ([]string, error) { return b.vc.List(ctx) }

// export is one volume opened for NBD.
type export struct {
	v  *volclient.Volume
	vc *volclient.Client

	// The writes StartWrite started and not finished, and the context
	// watched for the client leaving while they run (the connection's:
	// one watch for all of them rather than one per write).
	writes   atomic.Int64
	watchMu  sync.Mutex
	watchCtx context.Context
}

var (
	_ nbd.Export     = (*export)(nil)
	_ nbd.Trimmer    = (*export)(nil)
	_ nbd.Mapper     = (*export)(nil)
	_ nbd.BlockSizer = (*export)(nil)
	_ nbd.BufferPool = (*export)(nil)
	_ nbd.AsyncIO    = (*export)(nil)
)

func (e *export) Size() uint64   { return e.v.Size }
func (e *export) ReadOnly() bool { return e.v.ReadOnly }

// Close ends the connection's session of the volume (its requests are
// done): the last that may write gives the lock back.
func (e *export) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return e.v.Close(ctx)
}

// closeTimeout bounds the CLOSE of a session; if vlmcd does not answer,
// the mapper drops the session when this process ends.
const closeTimeout = time.Minute

// goneWhenDone tells the mapper that the client left if ctx (the
// connection's) ends while a request that may wait for the lock runs, so
// that the wait is cancelled; the returned function stops watching.
func (e *export) goneWhenDone(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, e.gone)
}

func (e *export) ReadAt(ctx context.Context, p []byte, off uint64) error {
	return e.v.ReadAt(ctx, p, off)
}

func (e *export) WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error {
	defer e.goneWhenDone(ctx)()
	return e.v.WriteAt(ctx, p, off, fua)
}

// StartRead implements nbd.AsyncIO: a read into a lent buffer is
// submitted without a goroutine waiting for it; done runs where the reply
// is delivered (the port's loop).
func (e *export) StartRead(_ context.Context, p []byte, off uint64, done func(error)) bool {
	return e.v.StartReadAt(p, off, done)
}

// StartWrite implements nbd.AsyncIO as StartRead does. A write may wait
// for another host's lock: if ctx ends while writes are in flight, the
// session is marked gone, as WriteAt does.
func (e *export) StartWrite(ctx context.Context, p []byte, off uint64, fua bool, done func(error)) bool {
	if !e.watching(ctx) {
		return false // another context than the first: WriteAt watches it
	}
	e.writes.Add(1)
	if ctx.Err() != nil { // ended already: the watch may have seen no write
		go e.gone()
	}
	ok := e.v.StartWriteAt(p, off, fua, func(err error) {
		e.writes.Add(-1)
		done(err)
	})
	if !ok {
		e.writes.Add(-1)
	}
	return ok
}

// watching reports whether ctx is the context StartWrite watches, and
// starts watching it if none is yet.
func (e *export) watching(ctx context.Context) bool {
	e.watchMu.Lock()
	defer e.watchMu.Unlock()
	if e.watchCtx == nil {
		e.watchCtx = ctx
		context.AfterFunc(ctx, func() {
			if e.writes.Load() > 0 {
				e.gone()
			}
		})
	}
	return e.watchCtx == ctx
}

func (e *export) gone() {
	gctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	e.v.Gone(gctx)
}

func (e *export) Flush(ctx context.Context) error { return e.v.Flush(ctx) }

// Trim frees the whole blocks of the range (partial blocks keep their
// data, which NBD allows: trimmed content is unspecified).
func (e *export) Trim(ctx context.Context, off, n uint64) error {
	defer e.goneWhenDone(ctx)()
	return e.v.Trim(ctx, off, n)
}

// BlockSize: any byte range works; 4 KiB is what the maps like; one
// request carries at most MaxIO.
func (e *export) BlockSize() (min, preferred, max uint32) { return 1, 4096, MaxIO }

// maxStatus bounds the range one block status answer covers, so that its
// extents fit a reply even for volumes of small blocks.
const maxStatus = 64 << 20

// Extents implements nbd.Mapper from the volume's map.
func (e *export) Extents(ctx context.Context, off, n uint64) ([]nbd.Extent, error) {
	n = min(n, maxStatus)
	alloc, err := e.v.Allocated(ctx, off, n)
	if err != nil {
		return nil, err
	}
	var out []nbd.Extent
	at := off
	for _, a := range alloc {
		if a.Offset > at {
			out = append(out, nbd.Extent{Length: a.Offset - at, Hole: true})
		}
		out = append(out, nbd.Extent{Length: a.Size})
		at = a.Offset + a.Size
	}
	if end := off + n; at < end {
		out = append(out, nbd.Extent{Length: end - at, Hole: true})
	}
	return out, nil
}

// Get implements nbd.BufferPool: payloads land in segment buffers, which
// vlmcd and the blocker then use in place.
func (e *export) Get(n int) nbd.Buffer {
	b, err := e.vc.Lend(n)
	if err != nil {
		return nil // the server uses its own memory
	}
	return &lent{b: b, vc: e.vc}
}

type lent struct {
	b  []byte
	vc *volclient.Client
}

func (l *lent) Bytes() []byte { return l.b }
func (l *lent) Release()      { l.vc.Unlend(l.b) }
