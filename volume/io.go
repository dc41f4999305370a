package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// checkRange checks that [off, off+n) lies within the volume.
func checkRange(name string, h *header, off, n uint64) error {
	if off+n < off || off+n > h.size {
		return fmt.Errorf("volume %q: range of %d bytes at %d beyond its size %d: %w",
			name, n, off, h.size, errs.ErrInvalid)
	}
	return nil
}

// heldHeader returns the cached header of held volume v. If the volume
// does not exist, the lock the engine took for it is given back.
func (e *Engine) heldHeader(ctx context.Context, v *vol) (*header, error) {
	v.mu.Lock()
	h, err := e.header(ctx, v)
	v.mu.Unlock()
	if errors.Is(err, errs.ErrNotFound) {
		e.release(ctx, v, false) // the volume vanished under us
	}
	return h, err
}

// pieces maps [off, off+n) through pg.
func pieces(ctx context.Context, pg *pager, off, n uint64) ([]Piece, error) {
	h := pg.h
	bs := uint64(h.blockSize)
	var segs []Piece
	for pos, end := off, off+n; pos < end; {
		b, in := pos/bs, pos%bs
		sz := min(bs-in, end-pos)
		ent, err := pg.lookup(ctx, b)
		if err != nil {
			return nil, err
		}
		if !ent.present {
			if k := len(segs) - 1; k >= 0 && segs[k].Zero {
				segs[k].Size += sz
			} else {
				segs = append(segs, Piece{Size: sz, Zero: true, ReadOnly: true})
			}
		} else {
			name, err := dataName(h, ent.ref, b)
			if err != nil {
				return nil, err
			}
			segs = append(segs, Piece{Object: name, Offset: in, Size: sz, ReadOnly: !h.owned(ent.ref)})
		}
		pos += sz
	}
	return segs, nil
}

// readView runs fn with a pager for volume ref (a name, or NAME/ID: see
// Ref) for a read: through the cache if the engine holds the volume's
// lock, else straight from storage, caching nothing. It never takes the
// lock.
func (e *Engine) readView(ctx context.Context, ref string, fn func(pg *pager) error) error {
	name, id, err := parseRef(ref)
	if err != nil {
		return err
	}
	v := e.vol(name)
	v.gate.RLock()
	defer v.gate.RUnlock()
	// A held volume's lock is confirmed now and then (fence.go); one found
	// broken is read from storage as by any reader without the lock.
	if err := e.confirm(ctx, v, e.confirmEvery); err != nil && !errors.Is(err, errs.ErrFenced) {
		return err
	}
	if v.isHeld() {
		h, err := e.heldHeader(ctx, v)
		if err != nil {
			return err
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.hdr != nil {
			h = v.hdr
		}
		if err := checkID(name, id, h); err != nil {
			return err
		}
		return fn(&pager{e: e, h: h, v: v})
	}
	h, err := e.readHeader(ctx, name)
	if err != nil {
		return err
	}
	if err := checkID(name, id, h); err != nil {
		return err
	}
	return fn(&pager{e: e, h: h, memo: make(map[pageKey]*page)})
}

// MapRead maps [off, off+n) of volume name (or a reference NAME/ID, see
// Ref) to object ranges, in order. It never takes the volume's lock: if
// the engine holds it the cached map answers, else header and pages are
// read from storage and nothing is cached.
// A piece may name an object that does not exist yet (a block mapped
// for writing whose data was never written): read it as zeros.
func (e *Engine) MapRead(ctx context.Context, ref string, off, n uint64) ([]Piece, error) {
	var segs []Piece
	name, _ := SplitRef(ref)
	err := e.readView(ctx, ref, func(pg *pager) error {
		if err := checkRange(name, pg.h, off, n); err != nil {
			return err
		}
		var err error
		segs, err = pieces(ctx, pg, off, n)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("map read: %w", err)
	}
	return segs, nil
}

// Allocated returns the ranges of [off, off+n) of volume name that are not
// zero blocks (whole blocks, clipped to the range), in order. Like MapRead
// it never takes the lock.
func (e *Engine) Allocated(ctx context.Context, ref string, off, n uint64) ([]Extent, error) {
	var exts []Extent
	name, _ := SplitRef(ref)
	err := e.readView(ctx, ref, func(pg *pager) error {
		if err := checkRange(name, pg.h, off, n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		bs := uint64(pg.h.blockSize)
		end := off + n
		return pg.walk(ctx, off/bs, (end-1)/bs+1, func(b uint64, _ entry) error {
			lo, hi := max(b*bs, off), min((b+1)*bs, end)
			if k := len(exts) - 1; k >= 0 && exts[k].Offset+exts[k].Size == lo {
				exts[k].Size += hi - lo
			} else {
				exts = append(exts, Extent{Offset: lo, Size: hi - lo})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("allocated: %w", err)
	}
	return exts, nil
}

// pending is a block being made writable.
type pending struct {
	block uint64
	old   entry
}

// MapWrite maps [off, off+n) of volume name for writing: when it returns,
// every piece is an object the volume owns alone (copy-on-write done and
// its map entry durable), so the data may be written into it. It waits
// while another owner holds the volume's lock and then keeps the lock
// while a session that may write or an Open wants it (see CloseSession),
// or else until Close. Concurrent callers for one block share a single
// copy. ref is a name or NAME/ID (Ref).
func (e *Engine) MapWrite(ctx context.Context, ref string, off, n uint64) ([]Piece, error) {
	segs, err := e.mapWrite(ctx, ref, off, n)
	if err != nil {
		return nil, fmt.Errorf("map write: %w", err)
	}
	return segs, nil
}

func (e *Engine) mapWrite(ctx context.Context, ref string, off, n uint64) ([]Piece, error) {
	name, id, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	v := e.vol(name)
	if err := e.checkBeforeWait(ctx, v, id); err != nil {
		return nil, err
	}
	if err := e.holdWait(ctx, v); err != nil {
		return nil, err
	}
	defer v.gate.RUnlock()
	if err := e.confirm(ctx, v, e.confirmEvery); err != nil {
		return nil, err
	}
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return nil, err
	}
	if err := checkID(name, id, h); err != nil {
		return nil, err
	}
	if h.snapshot() {
		return nil, fmt.Errorf("volume %q is a snapshot: %w", name, errs.ErrReadOnly)
	}
	if err := checkRange(name, h, off, n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	bs := uint64(h.blockSize)
	b0, b1 := off/bs, (off+n-1)/bs+1
	if _, err := e.makeAllWritable(ctx, v, func() ([]pending, []chan struct{}, error) {
		return e.classify(ctx, v, b0, b1)
	}); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.held {
		// Another request found the lock broken meanwhile and dropped
		// the cache: the map read now is the new holder's, not ours to
		// write in.
		if v.fenced {
			return nil, v.fencedError()
		}
		return nil, fmt.Errorf("volume %q: closed on this host meanwhile: %w", name, errs.ErrFenced)
	}
	h, err = e.header(ctx, v)
	if err != nil {
		return nil, err
	}
	return pieces(ctx, &pager{e: e, h: h, v: v}, off, n)
}

// makeAllWritable makes writable the blocks that classify (classify, or
// flatten's classifyShared) finds, until it finds none left, waiting for
// the blocks another caller is working on; it returns how many blocks it
// made writable itself.
func (e *Engine) makeAllWritable(ctx context.Context, v *vol, classify func() (todo []pending, waits []chan struct{}, err error)) (int, error) {
	done := 0
	for {
		todo, waits, err := classify()
		if err != nil {
			return done, err
		}
		if len(todo) > 0 {
			err := e.makeWritable(ctx, v, todo)
			v.mu.Lock()
			v.endInflight(todo)
			v.mu.Unlock()
			if err != nil {
				return done, err
			}
			done += len(todo)
		}
		if len(todo) == 0 && len(waits) == 0 {
			return done, nil
		}
		for _, ch := range waits {
			select {
			case <-ch:
			case <-ctx.Done():
				return done, fmt.Errorf("volume %q: %w", v.name, ctx.Err())
			}
		}
	}
}

// endInflight ends the inflight entries of todo's blocks (registered by
// classify), waking whoever waits for them. Caller holds v.mu.
func (v *vol) endInflight(todo []pending) {
	for _, p := range todo {
		close(v.inflight[p.block])
		delete(v.inflight, p.block)
	}
}

// classify finds the blocks of [b0, b1) that are not writable: those it
// registers in v.inflight (todo), and the channels of those another caller
// is already working on (waits).
func (e *Engine) classify(ctx context.Context, v *vol, b0, b1 uint64) (todo []pending, waits []chan struct{}, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	h, err := e.header(ctx, v)
	if err != nil {
		return nil, nil, err
	}
	pg := &pager{e: e, h: h, v: v}
	for b := b0; b < b1; b++ {
		ent, err := pg.lookup(ctx, b)
		if err != nil {
			v.endInflight(todo)
			return nil, nil, err
		}
		if ent.present && h.owned(ent.ref) {
			continue
		}
		if ch := v.inflight[b]; ch != nil {
			waits = append(waits, ch)
			continue
		}
		v.inflight[b] = make(chan struct{})
		todo = append(todo, pending{block: b, old: ent})
	}
	return todo, waits, nil
}

// ensureSession makes v's allocation epoch fresh for this process (once
// per holding of the lock, and again after a failure or a drop of owned
// objects), so that no name handed out can collide with an object left
// behind by a crash. Caller holds v.commitMu.
func (e *Engine) ensureSession(ctx context.Context, v *vol) error {
	v.mu.Lock()
	h, err := e.header(ctx, v)
	session := v.session
	v.mu.Unlock()
	if err != nil || session {
		return err
	}
	if err := e.confirm(ctx, v, 0); err != nil {
		return err
	}
	ep, err := e.bumpEpochAbove(ctx, v.name, usedEpoch(h, v.name))
	if err != nil {
		return err
	}
	nh := h.clone()
	last := &nh.spans[len(nh.spans)-1]
	if nh.prefixes[last.prefix] == v.name {
		// Every epoch of the record between last.to and ep was handed out
		// under this name's lock, to this volume or to volumes gone since
		// whose objects this map cannot point at.
		last.to = ep
	} else { // renamed: allocate under the new name from now on
		if len(nh.spans) == maxSpans {
			nh.spans = nh.spans[1:] // those objects will be copied on write
		}
		nh.spans = append(nh.spans, span{prefix: nh.prefixIndex(v.name), from: ep, to: ep})
	}
	if err := e.writeHeader(ctx, v.name, nh); err != nil {
		v.mu.Lock()
		v.forget()
		v.mu.Unlock()
		return err
	}
	v.mu.Lock()
	v.hdr, v.session = nh, true
	v.mu.Unlock()
	return nil
}

// makeWritable points the blocks of todo at objects of v's allocation
// epoch: a copy of the old object (made durable first), or nothing for a
// zero block; then it commits the map. On failure it forgets v's cache, so
// the next attempt starts a new session.
//
// The copies are made outside the commit mutex, so the allocation
// identity may move meanwhile (a trim, resize or failure ends the session
// and another write starts the next). The commit checks, under the
// mutex, that the identity is still the one the copies were named with,
// and otherwise copies again under the new one: an object is linked only
// while its epoch is its volume's allocation identity, which the garbage
// collector relies on (docs/gc.md). The copies left behind are garbage of
// an epoch no write links any more.
func (e *Engine) makeWritable(ctx context.Context, v *vol, todo []pending) (err error) {
	defer func() {
		if err != nil {
			v.mu.Lock()
			v.forget()
			v.mu.Unlock()
		}
	}()
	for attempt := 1; ; attempt++ {
		again, err := e.makeWritableOnce(ctx, v, todo)
		if err != nil || !again {
			return err
		}
		if attempt == 100 {
			return fmt.Errorf("volume %q: its allocation identity kept moving during copy-on-write (%d tries): %w",
				v.name, attempt, errs.ErrBusy)
		}
	}
}

// makeWritableOnce is one try of makeWritable: again is true if the
// allocation identity moved since the copies were made (nothing was
// committed).
func (e *Engine) makeWritableOnce(ctx context.Context, v *vol, todo []pending) (again bool, err error) {
	v.commitMu.Lock()
	err = e.ensureSession(ctx, v)
	var h *header
	if err == nil {
		v.mu.Lock()
		h, err = e.header(ctx, v)
		v.mu.Unlock()
	}
	v.commitMu.Unlock()
	if err != nil {
		return false, err
	}
	alloc := h.alloc()
	copied := false
	for _, p := range todo {
		if !p.old.present {
			continue
		}
		src, err := dataName(h, p.old.ref, p.block)
		if err != nil {
			return false, fmt.Errorf("volume %q: %w", v.name, err)
		}
		dst, _ := dataName(h, alloc, p.block)
		switch err := e.data.Copy(ctx, src, dst); {
		case errors.Is(err, errs.ErrNotFound):
			// Mapped but never written: it reads as zeros, as does the
			// new object until written.
		case err != nil:
			return false, fmt.Errorf("volume %q: copy-on-write of block %d: %w", v.name, p.block, err)
		default:
			copied = true
		}
	}
	if copied {
		if err := e.dataSync.sync(ctx); err != nil {
			return false, fmt.Errorf("volume %q: copy-on-write: %w", v.name, err)
		}
	}
	if e.hook != nil {
		e.hook("copied", v.name)
	}
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	v.mu.Lock()
	cur, err := e.header(ctx, v)
	if err == nil && identity(cur) != identity(h) {
		v.mu.Unlock()
		return true, nil
	}
	var t *txn
	if err == nil {
		t, err = e.newTxn(ctx, v)
	}
	if err == nil {
		for _, p := range todo {
			if err = t.set(ctx, p.block, entry{present: true, ref: alloc}); err != nil {
				break
			}
		}
	}
	v.mu.Unlock()
	if err != nil {
		return false, err
	}
	return false, t.commit(ctx)
}

// identity is h's allocation identity by name: (prefix, epoch).
func identity(h *header) string {
	a := h.alloc()
	if int(a.prefix) >= len(h.prefixes) {
		return fmt.Sprintf("#%d_%d", a.prefix, a.epoch)
	}
	return fmt.Sprintf("%s_%d", h.prefixes[a.prefix], a.epoch)
}

// Trim makes every whole block of [off, off+n) of volume name a zero block
// (the volume's last block counts as whole if the range reaches the end);
// partial blocks are left as they are. Objects only the volume owned are
// deleted. Like MapWrite it waits for the lock; ref is a name or NAME/ID.
func (e *Engine) Trim(ctx context.Context, ref string, off, n uint64) error {
	if err := e.trim(ctx, ref, off, n); err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	return nil
}

func (e *Engine) trim(ctx context.Context, ref string, off, n uint64) error {
	name, id, err := parseRef(ref)
	if err != nil {
		return err
	}
	v := e.vol(name)
	if err := e.checkBeforeWait(ctx, v, id); err != nil {
		return err
	}
	if err := e.holdWait(ctx, v); err != nil {
		return err
	}
	defer v.gate.RUnlock()
	if err := e.confirm(ctx, v, e.confirmEvery); err != nil {
		return err
	}
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return err
	}
	if err := checkID(name, id, h); err != nil {
		return err
	}
	if h.snapshot() {
		return fmt.Errorf("volume %q is a snapshot: %w", name, errs.ErrReadOnly)
	}
	if err := checkRange(name, h, off, n); err != nil {
		return err
	}
	bs := uint64(h.blockSize)
	b0, b1 := (off+bs-1)/bs, (off+n)/bs
	if off+n == h.size {
		b1 = h.nblocks()
	}
	if b0 >= b1 {
		return nil
	}
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	if err := e.ensureSession(ctx, v); err != nil {
		return err
	}
	v.mu.Lock()
	t, err := e.newTxn(ctx, v)
	changed := false
	if err == nil {
		changed, err = t.zero(ctx, b0, b1)
	}
	v.mu.Unlock()
	if err != nil || !changed {
		return err
	}
	return e.commitDropping(ctx, v, t)
}

// commitDropping commits a txn that may drop references to owned objects:
// afterwards the session ends (their names must not be handed out again
// before the deletes are durable) and the dropped objects are deleted.
// Caller holds v.commitMu.
func (e *Engine) commitDropping(ctx context.Context, v *vol, t *txn) error {
	err := t.commit(ctx)
	v.mu.Lock()
	if err != nil {
		v.forget()
	} else if len(t.dropped) > 0 {
		v.session = false
		v.pages = make(map[pageKey]*page)
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	e.deleteDropped(ctx, t.h, t.dropped)
	return nil
}
