package volume

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// Rollback makes volume name's content snapshot snap's, as a clone of
// snap in place: name's header points at snap's root, with snap's size
// (a volume grown since shrinks back; resize it again after), a fresh
// epoch and a fresh incarnation id, and what name owned alone is deleted.
//
// It is refused with errs.ErrBusy while name has sessions on this host
// (mapped devices, NBD clients) or is open or locked here (vlmc open,
// vlmc lock), with errs.ErrLocked while another host holds its lock, and
// with errs.ErrInvalid if snap is not of name's history (see inHistory:
// taken of name, or name's parent snapshot or one taken before it, up the
// chain of clones). Reverting a volume under a mounted filesystem
// corrupts it.
//
// The id is new, as after a remove and create: a connection another host
// opened before (reading without the lock) fails with not found from then
// on, instead of seeing the data change under it; this host has none.
//
// Order (a crash between steps leaves the old content or the new one,
// never a mix): the root marker of name (the collector walks name again:
// its header now reaches objects that existed before, see markers.go);
// name's epoch record (an epoch handed out and not used); the header, in
// one dual-slot update (the commit); then the objects name owned alone
// are deleted, best effort, as remove does (they are in no other map:
// owned objects are never shared; leftovers are garbage for the
// collector). No new map page is written: the size is snap's, so snap's
// root is the root.
func (e *Engine) Rollback(ctx context.Context, name, snap string) error {
	if err := e.rollback(ctx, name, snap); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

func (e *Engine) rollback(ctx context.Context, name, snap string) (err error) {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidName(snap); err != nil {
		return err
	}
	if name == snap {
		return fmt.Errorf("volume %q: rollback to itself: %w", name, errs.ErrInvalid)
	}
	v, s := e.vol(name), e.vol(snap)
	defer lockPair(v, s)()
	defer forgetOnError(&err, v)
	if err := busy(v); err != nil {
		return err
	}
	was, err := e.tryLock(ctx, "rollback", v)
	if err != nil {
		return err
	}
	defer e.release(ctx, v, was)
	// The snapshot's lock keeps it from being removed meanwhile (by any
	// host): its objects must be there when name's header points at them.
	wasS, err := e.tryLock(ctx, "rollback to", s)
	if err != nil {
		return err
	}
	defer e.release(ctx, s, wasS)
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return err
	}
	if h.snapshot() {
		return fmt.Errorf("volume %q is a snapshot: roll back a volume to one of its snapshots: %w", name, errs.ErrInvalid)
	}
	if err := busy(v); err != nil { // again, now that the lock is ours
		return err
	}
	sh, err := e.heldHeader(ctx, s)
	if err != nil {
		return err
	}
	if !sh.snapshot() {
		return fmt.Errorf("volume %q is not a snapshot: %w", snap, errs.ErrInvalid)
	}
	l, err := e.lineage(ctx)
	if err != nil {
		return err
	}
	l.hdrs[name], l.hdrs[snap] = h, sh
	if !l.inHistory(name, snap) || !isPrefixTable(sh.prefixes, h.prefixes) {
		of := "an unknown volume"
		if n := l.nodes[snap]; n != nil && n.Origin != "" {
			of = fmt.Sprintf("%q", n.Origin)
		}
		return fmt.Errorf("snapshot %q (taken of %s) is not of volume %q's history (its snapshots, its parent snapshot and those before it): %w",
			snap, of, name, errs.ErrInvalid)
	}
	if err := e.resolveRename(ctx, name, h); err != nil {
		return err
	}
	// 1. The collector's root marker: name will reach objects that
	// existed before.
	if err := e.markRoot(ctx, name); err != nil {
		return err
	}
	// 2. A fresh epoch: nothing name reaches now is its own.
	ep, err := e.bumpEpochAbove(ctx, name, usedEpoch(h, name))
	if err != nil {
		return err
	}
	// 3. The commit: name's header points at snap's root.
	nh := h.clone()
	nh.id = newID()
	nh.flags &^= flagRenaming | flagPending
	nh.link = ""
	nh.root, nh.size = sh.root, sh.size
	nh.spans = []span{{prefix: nh.prefixIndex(name), from: ep, to: ep}}
	if _, ok := takenOf(sh, h); !ok {
		nh.parent = snap // a clone of snap from now on
	}
	if err := e.writeHeader(ctx, name, nh); err != nil {
		v.forgetLocked()
		return err
	}
	v.mu.Lock()
	v.forget()
	v.hdr, v.session = nh, true
	v.mu.Unlock()
	// 4. What name owned alone is nobody's now.
	if h.root.present {
		e.deleteDropped(context.WithoutCancel(ctx), h,
			[]dropped{{page: true, key: pageKey{h.height() - 1, 0}, ref: h.root.ref}})
	}
	return nil
}

// busy refuses a rollback of v while this host uses it: sessions (mapped
// devices, NBD connections) or an explicit open or lock.
func busy(v *vol) error {
	v.mu.Lock()
	users, _ := v.counts()
	pinned := v.pinned
	v.mu.Unlock()
	switch {
	case pinned:
		return fmt.Errorf("volume %q is open on this host (vlmc open or lock): vlmc close it first: %w", v.name, errs.ErrBusy)
	case users > 0:
		return fmt.Errorf("volume %q is in use by %d connection(s) on this host (mapped devices, NBD clients): rolling back under them would corrupt what they see; close them first: %w",
			v.name, users, errs.ErrBusy)
	}
	return nil
}
