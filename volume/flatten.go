package volume

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// Flatten: a clone stops depending on its parent snapshot. Every block it
// reaches and does not own is copied to an object of its own, through the
// copy-on-write path of writes (makeWritable: the copy, a data sync, the
// map commit; v.inflight makes a write and the flatten of one block share
// one copy, whoever comes first), a range at a time while I/O goes on, so
// that a client drives it with a progress bar. FlattenDone then checks
// that nothing the volume reaches is shared any more, drops the
// references to shared map pages that cover only zero blocks, and clears
// the parent: from then on removing the parent snapshot and collecting
// garbage frees its space. The prefix table keeps the parent's names: no
// entry uses them any more, and indices must not move (owned pages name
// objects by index).

// flattenBatch bounds the blocks one makeWritable copies.
const flattenBatch = 64

// Flatten copies the blocks of [off, off+n) of volume name that it reaches
// but does not own (shared with its parent snapshot, or with its own
// snapshots) to objects of its own, and returns how many bytes of blocks
// it made its own (whole blocks). Zero blocks stay zero. It waits for the
// volume's lock like a write and gives it back afterwards unless a
// session here wants it; I/O of the volume goes on meanwhile.
func (e *Engine) Flatten(ctx context.Context, name string, off, n uint64) (uint64, error) {
	copied, err := e.flatten(ctx, name, off, n)
	if err != nil {
		return copied, fmt.Errorf("flatten: %w", err)
	}
	return copied, nil
}

func (e *Engine) flatten(ctx context.Context, name string, off, n uint64) (copied uint64, err error) {
	v, err := e.holdForFlatten(ctx, name)
	if err != nil {
		return 0, err
	}
	defer e.afterHold(ctx, v)
	defer v.gate.RUnlock()
	if err := e.confirm(ctx, v, e.confirmEvery); err != nil {
		return 0, err
	}
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return 0, err
	}
	if h.snapshot() {
		return 0, fmt.Errorf("volume %q is a snapshot: only a volume can be flattened: %w", name, errs.ErrInvalid)
	}
	if err := checkRange(name, h, off, n); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	bs := uint64(h.blockSize)
	end := (off+n-1)/bs + 1
	for b0 := off / bs; b0 < end; b0 += flattenBatch {
		b1 := min(b0+flattenBatch, end)
		if err := ctx.Err(); err != nil {
			return copied, fmt.Errorf("volume %q: %w", name, err)
		}
		k, err := e.makeAllWritable(ctx, v, func() ([]pending, []chan struct{}, error) {
			return e.classifyShared(ctx, v, b0, b1)
		})
		copied += uint64(k) * bs
		if err != nil {
			return copied, err
		}
	}
	return copied, nil
}

// classifyShared is classify for flatten: the present blocks of [b0, b1)
// that v does not own (zero blocks stay zero), registered in v.inflight
// (todo), and the channels of those another caller is making writable.
func (e *Engine) classifyShared(ctx context.Context, v *vol, b0, b1 uint64) (todo []pending, waits []chan struct{}, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	h, err := e.header(ctx, v)
	if err != nil {
		return nil, nil, err
	}
	pg := &pager{e: e, h: h, v: v}
	err = pg.walk(ctx, b0, b1, func(b uint64, ent entry) error {
		if h.owned(ent.ref) {
			return nil
		}
		if ch := v.inflight[b]; ch != nil {
			waits = append(waits, ch)
			return nil
		}
		v.inflight[b] = make(chan struct{})
		todo = append(todo, pending{block: b, old: ent})
		return nil
	})
	if err != nil {
		v.endInflight(todo)
		return nil, nil, err
	}
	return todo, waits, nil
}

// FlattenDone ends the flatten of volume name: it checks that every map
// page and data object the volume reaches is its own, except map pages
// that cover only zero blocks (its references to them become zero
// entries), and clears the volume's parent. A block still shared is
// refused with errs.ErrInvalid naming it (run Flatten over the whole
// volume first). It waits for the lock like Flatten.
func (e *Engine) FlattenDone(ctx context.Context, name string) error {
	if err := e.flattenDone(ctx, name); err != nil {
		return fmt.Errorf("flatten: %w", err)
	}
	return nil
}

func (e *Engine) flattenDone(ctx context.Context, name string) (err error) {
	v, err := e.holdForFlatten(ctx, name)
	if err != nil {
		return err
	}
	defer e.afterHold(ctx, v)
	defer v.gate.RUnlock()
	if err := e.confirm(ctx, v, 0); err != nil {
		return err
	}
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return err
	}
	if h.snapshot() {
		return fmt.Errorf("volume %q is a snapshot: only a volume can be flattened: %w", name, errs.ErrInvalid)
	}
	// Under the commit mutex the maps in storage are the volume's own
	// current ones (every commit writes through), and stay so.
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	v.mu.Lock()
	h, err = e.header(ctx, v)
	v.mu.Unlock()
	if err != nil {
		return err
	}
	// The shared pages right below owned ones (or the root): owned pages
	// are closed upward, so nothing below them is owned; the walk goes on
	// inside them to find shared data.
	var sharedPages []pageKey
	inShared := map[string]bool{}
	rootShared := false
	var shared []reached
	err = e.reach(ctx, name, h, func(o reached) error {
		switch {
		case o.owned:
			return nil
		case o.page:
			switch {
			case o.parent == "":
				rootShared = true
			case !inShared[o.parent]:
				sharedPages = append(sharedPages, o.key)
			}
			inShared[o.name] = true
			return nil
		default:
			shared = append(shared, o)
			return nil
		}
	})
	if err != nil {
		return err
	}
	if len(shared) > 0 {
		o := shared[0]
		return fmt.Errorf("volume %q: block %d (object %s) and %d more still shared: flatten the whole volume first: %w",
			name, o.key.index, o.name, len(shared)-1, errs.ErrInvalid)
	}
	if len(sharedPages) == 0 && !rootShared && h.parent == "" {
		return nil
	}
	if err := e.ensureSession(ctx, v); err != nil {
		return err
	}
	v.mu.Lock()
	t, err := e.newTxn(ctx, v)
	if err == nil {
		if rootShared {
			// Nothing below is owned, and no data is shared: all zero.
			t.h.root = entry{}
		} else {
			for _, k := range sharedPages {
				width := uint64(1) << (fanoutBits * uint(k.level+1))
				lo := k.index * width
				if _, err = t.zero(ctx, lo, lo+width); err != nil {
					break
				}
			}
		}
		t.h.parent = ""
		t.hdrDirty = true
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	return e.commitDropping(ctx, v, t)
}

// holdForFlatten waits for volume name's lock as a write does (holdWait)
// and returns with its gate held shared. A lock taken here, for no
// session, is recorded as an operation's intent, so that a mapper killed
// meanwhile gives it back at its next start.
func (e *Engine) holdForFlatten(ctx context.Context, name string) (*vol, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	v := e.vol(name)
	if e.intents != nil && !v.isHeld() {
		if err := e.intents.Begin(name); err != nil {
			return nil, fmt.Errorf("volume %q: record the lock's intent: %w", name, err)
		}
	}
	if err := e.holdWait(ctx, v); err != nil {
		if !v.isHeld() {
			e.endIntent(name)
		}
		return nil, err
	}
	return v, nil
}

// afterHold gives back a lock that nothing here wants any more (no
// session that may write, no Open), as the last session's end does; a
// lock kept for a session is the session's, not an operation's.
func (e *Engine) afterHold(ctx context.Context, v *vol) {
	if err := e.releaseIdle(ctx, v); err != nil {
		e.dmg.log().Warn("giving a volume's lock back after flatten failed; will try again", "volume", v.name, "err", err)
	}
	if v.isHeld() {
		e.endIntent(v.name)
	}
}
