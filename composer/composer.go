// Package composer is the volume composer (vlmcd): it serves volume READ
// and WRITE by asking the mapper which objects cover the range (MAPR or
// MAPW) and sending one request per object to the data blocker, all in
// parallel, each pointing into the caller's buffer (no copy). It answers
// when every part is done; the first failing part fails the request. A
// request whose mappings are cached is served in the port's loop
// (ServeAsync), any other by a worker (Serve); both split and collect
// through the same code (startIO in split.go).
//
// FLUSH (and SYNC) is a barrier for the volume: it waits for the writes in
// flight on it, then makes everything written durable at the data blocker
// and has the mapper confirm that this host still holds the volume's lock
// (ErrFenced if another host broke it).
// A WRITE with FUA is durable when answered (the flag goes with each part).
// SNAPSHOT waits for the writes in flight on the volume and holds new ones
// back until the mapper has answered, so a snapshot never misses a write
// that was answered before it, nor sees half of one in flight. Every other
// op (INFO, OPEN, CLOSE, DELETE, CLONE, RENAME, TRUNCATE, LIST, ACQUIRE,
// RELEASE, ...) is forwarded to the mapper unchanged; its reply goes straight
// back to the caller. DRAIN, from the mapper before it gives a volume's
// lock back on its own, waits for the volume's writes in flight and drops
// its cached mappings.
//
// A target may be a reference NAME/ID to one incarnation of a volume (what
// a block endpoint's session names it with): it goes to the mapper as it
// is, which fails the request if the volume called NAME is another one
// now; the composer's barriers are per name.
package composer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/metrics"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Composer is vlmcd's request handler.
type Composer struct {
	mapper, blocker int

	mu   sync.Mutex // guards vols
	vols map[string]*volState

	cache mapCache

	// stats counts every volume's READs and WRITEs (Stats); a volState
	// keeps its volume's, so that an I/O only adds atomically.
	stats metrics.Volumes
}

// volState is what the composer keeps of a volState while requests use it.
type volState struct {
	refs int
	io   *metrics.VolumeIO // the volume's I/O counters
	// gate: writes hold it shared while in flight; FLUSH and SNAPSHOT take
	// it exclusively to wait for them (and hold new ones back).
	gate sync.RWMutex
}

var _ peer.Handler = (*Composer)(nil)

// New returns a composer that asks the mapper at mapperPort and sends data
// I/O to the blocker at blockerPort.
func New(mapperPort, blockerPort int) *Composer {
	return &Composer{mapper: mapperPort, blocker: blockerPort, vols: map[string]*volState{}}
}

// Stats is the composer's per-volume I/O counters, for the metrics
// endpoint (internal/metrics).
func (c *Composer) Stats() *metrics.Volumes { return &c.stats }

// volName is the volume a request's target names: a volume name, or a
// reference NAME/ID to one incarnation of it (volume.Ref), which the mapper
// checks; gates and cache entries are per name.
func volName(target string) string {
	if i := strings.IndexByte(target, '/'); i >= 0 {
		return target[:i]
	}
	return target
}

// get returns the state of the volume target names, counting a reference.
func (c *Composer) get(target string) *volState {
	name := volName(target)
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.vols[name]
	if v == nil {
		v = &volState{io: c.stats.Get(name)}
		c.vols[name] = v
	}
	v.refs++
	return v
}

func (c *Composer) put(target string, v *volState) {
	name := volName(target)
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.refs--; v.refs == 0 {
		delete(c.vols, name)
	}
}

// Serve implements peer.Handler. It serves data I/O, FLUSH, SNAPSHOT
// and DRAIN itself and forwards every other volume operation to the
// mapper (Forwarded), which answers it.
func (c *Composer) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	switch r.Op() {
	case xseg.OpRead, xseg.OpWrite:
		start := time.Now()
		name := r.Target()
		v := c.get(name)
		defer c.put(name, v)
		if r.Op() == xseg.OpWrite {
			v.gate.RLock()
			defer v.gate.RUnlock()
		}
		return peer.Served, ioDone(v, r, start, c.io(ctx, p, r))
	case xseg.OpFlush, xseg.OpSync:
		return peer.Served, c.flush(ctx, p, r)
	case xseg.OpSnapshot:
		return peer.Served, c.snapshot(ctx, p, r)
	case xseg.OpDrain:
		// The mapper gives the volume's lock back: the writes in flight
		// end first, and no mapping fetched under the lock stays.
		v := c.get(r.Target())
		v.gate.Lock()
		c.cache.invalidate(r.Target())
		v.gate.Unlock()
		c.put(r.Target(), v)
		return peer.Served, nil
	case xseg.OpPing:
		return peer.Served, nil
	case xseg.OpInfo, xseg.OpList, xseg.OpAllocated,
		xseg.OpCheck, xseg.OpGC, xseg.OpUsage, xseg.OpDiff, xseg.OpTree:
		// These change no map (GC deletes only what no map reaches).
	default:
		// Anything else may change the volume's map.
		c.cache.invalidate(r.Target())
	}
	if err := p.Forward(r, c.mapper); err != nil {
		return peer.Served, fmt.Errorf("%s %q to the mapper: %w", r.Op(), r.Target(), err)
	}
	return peer.Forwarded, nil
}

// mapReplySize guesses the buffer a MAPR/MAPW reply for n bytes needs: one
// segment per block, assuming blocks of at least 64 KiB. A mapper that
// needs more answers ErrNoSpace and the composer asks again with room for
// 4 KiB blocks.
func mapReplySize(n uint64, minBlock uint64) int {
	const perSeg = 2 + wire.MaxNameLen + 8 + 8 + 4
	return int(64 + (n/minBlock+2)*perSeg)
}

// mapRange asks the mapper for the segments covering [off, off+n).
func (c *Composer) mapRange(ctx context.Context, p *peer.Peer, op xseg.Op, name string, off, n uint64) ([]wire.MapPiece, error) {
	for _, minBlock := range []uint64{64 << 10, 4 << 10} {
		r, err := p.Alloc(mapReplySize(n, minBlock))
		if err != nil {
			return nil, err
		}
		r.SetOp(op)
		if err := r.SetTarget(name); err != nil {
			p.Put(r)
			return nil, err
		}
		r.SetOffset(off)
		r.SetSize(n)
		rep, err := p.Call(context.WithoutCancel(ctx), r, c.mapper)
		if err != nil {
			return nil, err
		}
		var mr wire.MapReply
		err = rep.Err()
		if err == nil {
			err = mr.Unmarshal(rep.Data())
		}
		p.Put(rep)
		if errors.Is(err, errs.ErrNoSpace) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var sum uint64
		for _, s := range mr.Pieces {
			sum += s.Size
		}
		if sum != n {
			return nil, fmt.Errorf("mapper mapped %d of %d bytes: %w", sum, n, errs.ErrCorrupt)
		}
		return mr.Pieces, nil
	}
	return nil, fmt.Errorf("map reply for %d bytes does not fit: %w", n, errs.ErrNoSpace)
}

// io serves a READ or WRITE: it finds the pieces of the range (in the
// mapping cache, or from the mapper, whose cacheable answer it keeps)
// and sends them through startIO, the path ServeAsync takes too. The
// parts borrow the caller's buffer, so io waits for every part it sent,
// even when one fails or ctx ends.
func (c *Composer) io(ctx context.Context, p *peer.Peer, r *xseg.Request) error {
	n := r.Size()
	if n > uint64(len(r.Buffer())) {
		return fmt.Errorf("size %d beyond the %d-byte buffer: %w", n, len(r.Buffer()), errs.ErrInvalid)
	}
	if n == 0 {
		return nil
	}
	mapOp := xseg.OpMapR
	if r.Op() == xseg.OpWrite {
		mapOp = xseg.OpMapW
	}
	segs, gen, bs := c.cache.lookup(r.Target(), r.Offset(), n, r.Op() == xseg.OpWrite)
	if segs == nil {
		if bs == 0 {
			bs = c.blockSize(ctx, p, r.Target())
		}
		asked := time.Now()
		var err error
		if segs, err = c.mapRange(ctx, p, mapOp, r.Target(), r.Offset(), n); err != nil {
			if errors.Is(err, errs.ErrFenced) {
				c.cache.invalidate(r.Target())
			}
			return err
		}
		c.cache.store(r.Target(), gen, bs, r.Offset(), segs, asked)
	}
	done := make(chan error, 1)
	if err := c.startIO(p, r, segs, func(err error) { done <- err }); err != nil {
		return err
	}
	return <-done
}

// flush waits for the volume's writes in flight, then syncs the data
// blocker and, at the same time, has the mapper confirm that this host
// still holds the volume's lock if it holds it (confirmLock): both start
// once the writes the flush covers are done, so the flush waits for the
// slower of the two, not for both in turn. A FLUSH with no target syncs
// without a barrier.
func (c *Composer) flush(ctx context.Context, p *peer.Peer, r *xseg.Request) error {
	name := r.Target()
	var confirmed <-chan error
	if name != "" {
		v := c.get(name)
		v.gate.Lock()
		v.gate.Unlock() // a barrier: only the wait matters
		c.put(name, v)
		ch := make(chan error, 1)
		confirmed = ch
		go func() { ch <- c.confirmLock(ctx, p, name) }()
	}
	err := c.syncBlocker(ctx, p)
	if confirmed != nil {
		if cerr := <-confirmed; err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("flush %q: %w", name, err)
	}
	return nil
}

// syncBlocker makes everything written at the data blocker durable.
func (c *Composer) syncBlocker(ctx context.Context, p *peer.Peer) error {
	s, err := p.Alloc(0)
	if err != nil {
		return err
	}
	s.SetOp(xseg.OpSync)
	rep, err := p.Call(context.WithoutCancel(ctx), s, c.blocker)
	if err != nil {
		return err
	}
	defer p.Put(rep)
	return rep.Err()
}

// confirmLock asks the mapper (FLUSH) whether the writes made through its
// mappings of volume name were made under this host's lock: it fails with
// ErrFenced if another host broke the lock, and then the volume's cached
// mappings go. A mapper that does not serve FLUSH (an older one) cannot
// tell; it passes.
func (c *Composer) confirmLock(ctx context.Context, p *peer.Peer, name string) error {
	m, err := p.Alloc(1024)
	if err != nil {
		return err
	}
	m.SetOp(xseg.OpFlush)
	if err := m.SetTarget(name); err != nil {
		p.Put(m)
		return err
	}
	rep, err := p.Call(context.WithoutCancel(ctx), m, c.mapper)
	if err != nil {
		return err
	}
	defer p.Put(rep)
	err = peer.ReplyErr(rep)
	switch {
	case errors.Is(err, errs.ErrNotSupported):
		return nil
	case errors.Is(err, errs.ErrFenced):
		c.cache.invalidate(name)
	}
	return err
}

// snapshot holds the volume's writes back while the mapper takes the
// snapshot.
func (c *Composer) snapshot(ctx context.Context, p *peer.Peer, r *xseg.Request) error {
	name := r.Target()
	v := c.get(name)
	defer c.put(name, v)
	v.gate.Lock()
	defer v.gate.Unlock()
	c.cache.invalidate(name)
	s, err := p.Alloc(len(r.Data()))
	if err != nil {
		return err
	}
	s.SetOp(xseg.OpSnapshot)
	s.SetFlags(r.Flags())
	if err := s.SetTarget(name); err != nil {
		p.Put(s)
		return err
	}
	copy(s.Buffer(), r.Data())
	s.SetSize(r.Size())
	rep, err := p.Call(context.WithoutCancel(ctx), s, c.mapper)
	if err != nil {
		return err
	}
	defer p.Put(rep)
	if err := peer.ReplyErr(rep); err != nil {
		// Pass the mapper's explanation (who holds the lock, the message)
		// on to the caller.
		n := copy(r.Buffer(), rep.Data())
		r.SetSize(uint64(n))
		return err
	}
	return nil
}
