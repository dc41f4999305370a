package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// Fencing: what happens to a host whose lock another host broke with
// Unlock(force) (see docs/maps.md, "Fencing").
//
// The breaker takes the lock, waits FenceWait, and moves the volume to a
// fresh allocation identity (one span (name, E, E), as the origin of a
// snapshot), so that nothing the old holder may still write in place is
// owned by anybody: its late writes can only land in objects that are
// copied before they change.
//
// The old holder finds out by asking the store who holds the lock
// (confirm): before every map commit, and when MapRead, MapWrite or Flush
// (asked by the volume composer before it acknowledges a FLUSH) finds its
// last look older than ConfirmEvery. Having lost it, the engine drops its
// cache and marks the volume fenced: MapWrite, Trim and Flush fail with
// errs.ErrFenced (reads go on, from storage, without the lock) until the
// volume is closed on this host (Close, or the end of its last session
// that may write), or opened or locked again explicitly (Open, Lock).
//
// The three times make a lease. A flush the old holder acknowledges
// covers writes done less than ConfirmEvery after its last look, which
// was before the break; the breaker waits longer than that before anybody
// may copy the old holder's objects, so those writes are in what is
// copied: no acknowledged flush of the old holder is lost. A composer
// uses a cached mapping for MappingLease after asking for it, and the
// mapper answered from a look less than ConfirmEvery old; the breaker
// waits longer than both, so when Unlock(force) returns the old holder's
// next write asks the mapper, which asks the store: it fails, whatever its
// client did meanwhile.

// ConfirmEvery is how old the engine's last look at a held volume's lock
// may be when it answers MapRead, MapWrite or Flush without asking again.
const ConfirmEvery = 500 * time.Millisecond

// MappingLease is how long a volume composer may use a mapping the mapper
// gave as cacheable (wire.PieceCacheable), counted from when it asked.
const MappingLease = 500 * time.Millisecond

// FenceWait is how long Unlock(force) holds the broken lock before it
// fences the volume and lets it go (see above): longer than ConfirmEvery
// plus MappingLease, with half a second to spare for the old holder's
// requests on their way.
const FenceWait = ConfirmEvery + MappingLease + 500*time.Millisecond

// fencedError is the error of I/O on a fenced volume.
func (v *vol) fencedError() error {
	by := "nobody now"
	if v.fencedBy != "" {
		by = v.fencedBy + " now"
	}
	return fmt.Errorf("volume %q: this host's lock was broken by a forced unlock (held by %s): writes since may be lost; "+
		"writes and flushes fail until the volume is closed on this host: %w", v.name, by, errs.ErrFenced)
}

// confirm checks that the engine still holds v's lock if it believes so
// (v.held), asking the store unless it did less than maxAge ago (0: ask
// now). If the lock is free or another owner's, v is fenced: its cache and
// hold are dropped and the error wraps errs.ErrFenced, as it does for a
// volume fenced before. A lock found free is never taken again here. A
// volume the engine does not hold passes. Caller holds v.gate (shared or
// exclusive), so that Close or Unlock cannot give the lock back meanwhile.
func (e *Engine) confirm(ctx context.Context, v *vol, maxAge time.Duration) error {
	v.mu.Lock()
	held, fenced, at := v.held, v.fenced, v.confirmed
	v.mu.Unlock()
	switch {
	case fenced:
		return e.fencedError(v)
	case !held:
		return nil
	case maxAge > 0 && !at.IsZero() && time.Since(at) < maxAge:
		return nil
	}
	start := time.Now()
	owner, err := e.locker.LockOwner(ctx, lockName(v.name))
	switch {
	case err == nil && owner == e.owner:
		v.mu.Lock()
		if start.After(v.confirmed) {
			v.confirmed = start
		}
		v.mu.Unlock()
		return nil
	case err != nil && !errors.Is(err, errs.ErrNotFound):
		return fmt.Errorf("volume %q: who holds its lock: %w", v.name, err)
	}
	v.mu.Lock()
	if v.held {
		v.held = false
		v.fenced, v.fencedBy = true, owner
		v.forget()
	}
	v.mu.Unlock()
	return e.fencedError(v)
}

func (e *Engine) fencedError(v *vol) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.fenced {
		// Closed meanwhile: the lock is given up, not lost.
		return fmt.Errorf("volume %q: closed on this host meanwhile: %w", v.name, errs.ErrFenced)
	}
	return v.fencedError()
}

// unfence ends v's fenced state (Close, Open, Lock). Caller holds v.mu.
func (v *vol) unfence() {
	v.fenced, v.fencedBy = false, ""
}

// Fenced reports whether volume name is fenced on this engine.
func (e *Engine) Fenced(name string) bool {
	e.mu.Lock()
	v := e.vols[name]
	e.mu.Unlock()
	if v == nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fenced
}

// Flush is asked by a volume composer before it acknowledges a FLUSH of
// volume ref (a name or NAME/ID), once the writes the flush covers are
// done: if the engine holds the volume's lock it makes sure that the lock
// was still its own less than ConfirmEvery ago (asking the store if its
// last look is older), so that no flush is acknowledged for writes another
// host's forced unlock may have left out (see FenceWait). It fails with
// errs.ErrFenced if the lock was lost (now or before, until Close). The
// map needs nothing: it is written with FUA.
func (e *Engine) Flush(ctx context.Context, ref string) error {
	name, _, _ := strings.Cut(ref, "/")
	if err := ValidName(name); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	e.mu.Lock()
	v := e.vols[name]
	e.mu.Unlock()
	if v == nil {
		return nil
	}
	v.gate.RLock()
	defer v.gate.RUnlock()
	if err := e.confirm(ctx, v, e.confirmEvery); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// unlock serves Unlock. Caller holds v.gate exclusively.
//
// Our own lock is released. Another owner's is broken only with force,
// and then the volume is fenced against the old holder (fenceBreak). With
// force, a lock nobody holds is fenced too: the break may have been done
// by a breaker that crashed before it fenced, so `unlock -f` done again
// finishes the job. Without force, a free lock is an error (ErrNotFound:
// the operator named a volume that is not locked, likely not the one
// meant).
func (e *Engine) unlock(ctx context.Context, v *vol, force bool) error {
	ln := lockName(v.name)
	owner, err := e.locker.LockOwner(ctx, ln)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		e.dropHold(v)
		if !force {
			if _, err := e.readHeader(ctx, v.name); errors.Is(err, errs.ErrNotFound) {
				return err
			}
			return fmt.Errorf("volume %q is not locked: %w", v.name, errs.ErrNotFound)
		}
		return e.fenceBreak(ctx, v, "")
	case err != nil:
		return fmt.Errorf("volume %q: who holds its lock: %w", v.name, err)
	case owner != e.owner && !force:
		return fmt.Errorf("volume %q is locked by %s (force breaks it): %w", v.name, owner, errs.ErrNotOwner)
	case owner != e.owner:
		if err := e.locker.Unlock(ctx, ln, e.owner, true); err != nil && !errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("volume %q: break the lock of %s: %w", v.name, owner, err)
		}
		e.dropHold(v)
		return e.fenceBreak(ctx, v, owner)
	}
	e.dropHold(v)
	if err := e.locker.Unlock(ctx, ln, e.owner, false); err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("volume %q is not locked: %w", v.name, errs.ErrNotFound)
		}
		return fmt.Errorf("volume %q: %w", v.name, err)
	}
	return nil
}

// dropHold forgets v's hold, cache and fenced state (its lock is being
// given up or broken here).
func (e *Engine) dropHold(v *vol) {
	v.mu.Lock()
	v.held = false
	v.unfence()
	v.forget()
	v.mu.Unlock()
}

// fenceBreak fences volume v after its lock was broken (old: the holder
// it was broken from, "" if it was found free): it takes the lock, waits
// e.fenceWait (FenceWait: the old holder's lease runs out), moves the
// volume to a fresh allocation identity, one span (name, E, E) with E
// fresh from the epoch record, and gives the lock back. From then on the
// objects the old holder owned are shared: nobody writes them in place
// again (they are copied on write), so whatever the old holder still
// writes into them before it notices cannot overwrite a later write. They
// are garbage once nothing points at them (for the collector). A snapshot
// or a volume that does not exist needs nothing. Caller holds v.gate
// exclusively.
func (e *Engine) fenceBreak(ctx context.Context, v *vol, old string) error {
	ln := lockName(v.name)
	if err := e.locker.TryLock(ctx, ln, e.owner); err != nil {
		// Taken between the break and this try (a host waiting for it):
		// that host's session may own the old holder's objects.
		return fmt.Errorf("volume %q: lock broken, but it was taken again before the volume could be fenced "+
			"(a write of the old holder may still land in place; run unlock -f again once its holder is known to be gone): %w",
			v.name, lockedErr("fence", v.name, err))
	}
	v.mu.Lock()
	v.held = true
	v.confirmed = time.Now()
	v.mu.Unlock()
	var err error
	if e.fenceWait > 0 {
		t := time.NewTimer(e.fenceWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			err = fmt.Errorf("waiting for the old holder's lease to run out: %w", ctx.Err())
		}
	}
	if err == nil {
		err = e.moveIdentity(context.WithoutCancel(ctx), v)
	}
	e.release(ctx, v, false)
	if err != nil {
		what := "the lock found free"
		if old != "" {
			what = "the lock of " + old + " broken"
		}
		return fmt.Errorf("volume %q: %s, but not fenced: %w", v.name, what, err)
	}
	return nil
}

// moveIdentity gives held volume v a fresh allocation identity, one span
// (name, E, E): everything it had becomes shared.
func (e *Engine) moveIdentity(ctx context.Context, v *vol) error {
	h, err := e.readHeader(ctx, v.name)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return nil
	case err != nil:
		return err
	case h.snapshot():
		return nil
	}
	ep, err := e.bumpEpochAbove(ctx, v.name, usedEpoch(h, v.name))
	if err != nil {
		return err
	}
	nh := h.clone()
	nh.spans = []span{{prefix: nh.prefixIndex(v.name), from: ep, to: ep}}
	return e.writeHeader(ctx, v.name, nh)
}
