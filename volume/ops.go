package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/archipelago-go/archipelago/errs"
)

// forgetOnError drops the cached maps of vs if *err is set: after a
// failed write the cache may not match storage.
// Refusals (checked before anything is written) keep the cache.
func forgetOnError(err *error, vs ...*vol) {
	if *err != nil && !isRefusal(*err) {
		for _, v := range vs {
			v.forgetLocked()
		}
	}
}

func isRefusal(err error) bool {
	for _, r := range []error{errs.ErrInvalid, errs.ErrReadOnly, errs.ErrExists, errs.ErrLocked, errs.ErrTooLarge, errs.ErrBusy} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

func checkSize(name string, size uint64) error {
	switch {
	case size == 0:
		return fmt.Errorf("volume %q: size 0: %w", name, errs.ErrInvalid)
	case size > MaxSize:
		return fmt.Errorf("volume %q: size %d beyond the limit of %d bytes: %w", name, size, MaxSize, errs.ErrTooLarge)
	}
	return nil
}

// exists tells whether a live volume has the name.
func (e *Engine) exists(ctx context.Context, name string) error {
	_, err := e.readHeader(ctx, name)
	switch {
	case err == nil:
		return fmt.Errorf("volume %q: %w", name, errs.ErrExists)
	case errors.Is(err, errs.ErrNotFound):
		return nil
	}
	return err
}

// adopt caches h as the header of v, whose epoch was just made fresh.
func (v *vol) adopt(h *header) {
	v.mu.Lock()
	v.hdr, v.session = h, true
	v.mu.Unlock()
}

// Create makes a blank thin volume of size bytes: every block reads as
// zeros and costs nothing until written. It takes the volume's lock for
// the time of the call (failing if another owner holds it).
func (e *Engine) Create(ctx context.Context, name string, size uint64) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := checkSize(name, size); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	v := e.vol(name)
	v.gate.Lock()
	defer v.gate.Unlock()
	was, err := e.tryLock(ctx, "create", v)
	if err != nil {
		return err
	}
	defer e.release(ctx, v, was)
	if err := e.exists(ctx, name); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	ep, err := e.bumpEpoch(ctx, name)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	h := &header{id: newID(), size: size, blockSize: e.blockSize, prefixes: []string{name},
		spans: []span{{prefix: 0, from: ep, to: ep}}}
	if err := e.createNew(ctx, v, h, nil); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	return nil
}

// createNew writes the fresh pages and then the header of a new volume;
// on failure it removes what it wrote (a crash leaves pages nothing points
// at, or a whole header).
func (e *Engine) createNew(ctx context.Context, v *vol, h *header, pages []*page) error {
	for _, p := range pages {
		if err := e.writePage(ctx, h, p, true); err != nil {
			return fmt.Errorf("volume %q: %w", v.name, err)
		}
	}
	if e.hook != nil {
		e.hook("pages", v.name)
	}
	if err := e.createHeader(ctx, v.name, h); err != nil {
		cctx := context.WithoutCancel(ctx)
		if e.maps.Delete(cctx, v.name) == nil {
			_ = e.mapsSync.sync(cctx)
		}
		return err
	}
	v.adopt(h)
	return nil
}

// peekHeader returns the header of volume name: the cached one if the
// engine holds its lock, else a fresh read.
func (e *Engine) peekHeader(ctx context.Context, name string) (*header, error) {
	v := e.vol(name)
	v.gate.RLock()
	defer v.gate.RUnlock()
	// A cache kept under a lock another host broke is not read (fence.go).
	if err := e.confirm(ctx, v, e.confirmEvery); err != nil && !errors.Is(err, errs.ErrFenced) {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.held {
		return e.header(ctx, v)
	}
	return e.readHeader(ctx, name)
}

// Clone makes volume name from snapshot parent: it reads as the parent
// and then as zeros up to size (0: the parent's size; never smaller).
// Writes to the clone never reach the parent.
func (e *Engine) Clone(ctx context.Context, parent, name string, size uint64) error {
	if err := e.clone(ctx, parent, name, size); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	return nil
}

func (e *Engine) clone(ctx context.Context, parent, name string, size uint64) (err error) {
	if err := ValidName(parent); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if parent == name {
		return fmt.Errorf("volume %q: clone of itself: %w", name, errs.ErrExists)
	}
	ph, err := e.peekHeader(ctx, parent)
	if err != nil {
		return err
	}
	if !ph.snapshot() {
		return fmt.Errorf("volume %q is not a snapshot; clone a snapshot of it: %w", parent, errs.ErrInvalid)
	}
	if size == 0 {
		size = ph.size
	}
	if size < ph.size {
		return fmt.Errorf("volume %q: size %d smaller than its parent %q (%d): %w", name, size, parent, ph.size, errs.ErrInvalid)
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	v := e.vol(name)
	v.gate.Lock()
	defer v.gate.Unlock()
	defer forgetOnError(&err, v)
	was, err := e.tryLock(ctx, "clone to", v)
	if err != nil {
		return err
	}
	defer e.release(ctx, v, was)
	if err := e.exists(ctx, name); err != nil {
		return err
	}
	// The clone will reach the parent's objects: its root marker first
	// (docs/gc.md).
	if err := e.markRoot(ctx, name); err != nil {
		return err
	}
	ep, err := e.bumpEpoch(ctx, name)
	if err != nil {
		return err
	}
	h := &header{id: newID(), size: ph.size, blockSize: ph.blockSize, root: ph.root, parent: parent,
		prefixes: slices.Clone(ph.prefixes)}
	h.spans = []span{{prefix: h.prefixIndex(name), from: ep, to: ep}}
	oldH := h.height()
	h.size = size
	return e.createNew(ctx, v, h, growRoot(h, oldH))
}

// Snapshot makes snap a read-only copy of volume vol as it is now, in a
// time independent of the volume's size: vol moves to a new epoch, so
// that everything it has becomes shared with snap and is copied on the
// next write. It syncs the data store first. No data write into vol's
// objects may be in flight (the volume composer drains the volume before
// it forwards a snapshot). It needs vol's lock (tried once).
func (e *Engine) Snapshot(ctx context.Context, vol, snap string) error {
	if err := e.snapshot(ctx, vol, snap); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

func (e *Engine) snapshot(ctx context.Context, name, snap string) (err error) {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidName(snap); err != nil {
		return err
	}
	if name == snap {
		return fmt.Errorf("volume %q: snapshot onto itself: %w", snap, errs.ErrExists)
	}
	v, s := e.vol(name), e.vol(snap)
	defer lockPair(v, s)()
	defer forgetOnError(&err, v, s)
	was, err := e.tryLock(ctx, "snapshot", v)
	if err != nil {
		return err
	}
	defer e.release(ctx, v, was)
	wasS, err := e.tryLock(ctx, "snapshot to", s)
	if err != nil {
		return err
	}
	defer e.release(ctx, s, wasS)
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return err
	}
	if h.snapshot() {
		return fmt.Errorf("volume %q is a snapshot already: %w", name, errs.ErrInvalid)
	}
	if err := e.exists(ctx, snap); err != nil {
		return err
	}
	// The snapshot will reach the volume's objects: its root marker
	// before any header changes (docs/gc.md).
	if err := e.markRoot(ctx, snap); err != nil {
		return err
	}
	// Data written before the snapshot (without FUA) becomes durable, so
	// that it is in the snapshot after a crash too.
	if err := e.dataSync.sync(ctx); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	// First the origin leaves the shared epoch (durably), then the
	// snapshot appears: a crash between leaves no snapshot and an origin
	// that copies on its next writes.
	ep, err := e.bumpEpochAbove(ctx, name, usedEpoch(h, name))
	if err != nil {
		return err
	}
	nh := h.clone()
	nh.spans = []span{{prefix: nh.prefixIndex(name), from: ep, to: ep}}
	if err := e.writeHeader(ctx, name, nh); err != nil {
		v.forgetLocked()
		return err
	}
	v.adopt(nh)
	sh := &header{id: newID(), flags: flagSnapshot, size: h.size, blockSize: h.blockSize, root: h.root,
		spans: h.spans, parent: name, prefixes: slices.Clone(nh.prefixes)}
	return e.createNew(ctx, s, sh, nil)
}

// resolveRename undoes the start of a rename recorded in h (the header of
// name) that did not finish: the new header it may have left, invisible
// while name exists, is deleted before name goes away. Caller holds name's
// gate and lock.
func (e *Engine) resolveRename(ctx context.Context, name string, h *header) error {
	if h.flags&flagRenaming == 0 {
		return nil
	}
	to := h.link
	t := e.vol(to)
	if !t.gate.TryLock() {
		return fmt.Errorf("volume %q: an unfinished rename to %q is being resolved: %w", name, to, errs.ErrBusy)
	}
	defer t.gate.Unlock()
	was, err := e.tryLock(ctx, "resolve rename to", t)
	if err != nil {
		return err
	}
	defer e.release(ctx, t, was)
	th, err := e.readHeaderRaw(ctx, to)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return nil
	case err != nil:
		return err
	case th.flags&flagPending == 0 || th.link != name || th.id != h.id:
		return nil
	}
	if err := e.maps.Delete(ctx, to); err != nil && !errors.Is(err, errs.ErrNotFound) {
		return fmt.Errorf("volume %q: undo rename to %q: %w", name, to, err)
	}
	return e.mapsSync.sync(ctx)
}

// Remove deletes volume name: the name disappears at once. Objects shared
// with snapshots or clones stay; those the volume owned alone are deleted
// (best effort; leftovers are garbage nothing points at). A volume with
// sessions open on this host is refused (errs.ErrBusy); RemoveForce
// removes it anyway.
func (e *Engine) Remove(ctx context.Context, name string) error {
	if err := e.remove(ctx, name, false); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// RemoveForce is Remove even if sessions are open on the volume: they end
// here, and their I/O fails from now on (it names the removed incarnation),
// also after a volume of the same name is created.
func (e *Engine) RemoveForce(ctx context.Context, name string) error {
	if err := e.remove(ctx, name, true); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

func (e *Engine) remove(ctx context.Context, name string, force bool) (err error) {
	if err := ValidName(name); err != nil {
		return err
	}
	v := e.vol(name)
	v.gate.Lock()
	defer v.gate.Unlock()
	defer forgetOnError(&err, v)
	was, err := e.tryLock(ctx, "remove", v)
	if err != nil {
		return err
	}
	removed := false
	defer func() { e.release(ctx, v, was && !removed) }()
	h, err := e.heldHeader(ctx, v)
	if errors.Is(err, errs.ErrCorrupt) {
		// An unreadable header can still be removed; what it pointed at is
		// left for the garbage collector.
		removed, err = e.deleteHeader(ctx, name)
		return err
	}
	if err != nil {
		return err
	}
	v.mu.Lock()
	users := v.usersOf(h.id)
	v.mu.Unlock()
	if users > 0 && !force {
		return fmt.Errorf("volume %q is in use by %d connection(s) on this host (NBD clients, mapped devices): close them first, or force: %w",
			name, users, errs.ErrBusy)
	}
	if err := e.resolveRename(ctx, name, h); err != nil {
		return err
	}
	gone, err := e.deleteHeader(ctx, name)
	if !gone {
		return err
	}
	removed = true
	v.mu.Lock()
	for k, s := range v.sessions {
		if s.id == h.id {
			delete(v.sessions, k)
		}
	}
	v.cancelOrphanWaits()
	v.mu.Unlock()
	if !h.snapshot() && h.root.present {
		e.deleteDropped(context.WithoutCancel(ctx), h,
			[]dropped{{page: true, key: pageKey{h.height() - 1, 0}, ref: h.root.ref}})
	}
	return nil
}

// deleteHeader deletes the header object name and syncs: gone is true if
// it is durably gone, whatever the delete reported; else err says why.
func (e *Engine) deleteHeader(ctx context.Context, name string) (gone bool, err error) {
	errDel := e.maps.Delete(ctx, name)
	if errors.Is(errDel, errs.ErrNotFound) {
		errDel = nil
	}
	if err := e.mapsSync.sync(ctx); err != nil {
		// Once more: until a sync succeeds nobody knows the outcome.
		if err2 := e.mapsSync.sync(ctx); err2 != nil {
			return false, fmt.Errorf("volume %q: %w", name, err)
		}
	}
	if errDel == nil {
		return true, nil
	}
	if _, err := e.maps.Stat(ctx, name); errors.Is(err, errs.ErrNotFound) {
		return true, nil
	}
	return false, fmt.Errorf("volume %q: %w", name, errDel)
}

// Rename gives volume old the name new. Its objects keep their names; new
// objects are named after new from its next session on, in epochs new's
// record hands out, so no two volumes ever name an object alike. It needs
// both names' locks (tried once).
func (e *Engine) Rename(ctx context.Context, old, new string) error {
	if err := e.rename(ctx, old, new); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	return nil
}

func (e *Engine) rename(ctx context.Context, old, new string) (err error) {
	if err := ValidName(old); err != nil {
		return err
	}
	if err := ValidName(new); err != nil {
		return err
	}
	if old == new {
		return fmt.Errorf("volume %q: rename onto itself: %w", new, errs.ErrExists)
	}
	vo, vn := e.vol(old), e.vol(new)
	defer lockPair(vo, vn)()
	defer forgetOnError(&err, vo, vn)
	wasO, err := e.tryLock(ctx, "rename", vo)
	if err != nil {
		return err
	}
	done := false
	defer func() { e.release(ctx, vo, wasO && !done) }()
	wasN, err := e.tryLock(ctx, "rename to", vn)
	if err != nil {
		return err
	}
	keepN := wasN
	defer func() { e.release(ctx, vn, keepN) }()
	h, err := e.heldHeader(ctx, vo)
	if err != nil {
		return err
	}
	vo.mu.Lock()
	users := vo.usersOf(h.id)
	vo.mu.Unlock()
	if users > 0 {
		// Their I/O names the volume: after a rename it would fail.
		return fmt.Errorf("volume %q is in use by %d connection(s) on this host, which reach it by its name: close them first: %w",
			old, users, errs.ErrBusy)
	}
	if err := e.exists(ctx, new); err != nil {
		return err
	}
	if h.link != new {
		if err := e.resolveRename(ctx, old, h); err != nil {
			return err
		}
	}
	// 0. The new name will reach the volume's objects: its root marker
	// before any header changes (docs/gc.md).
	if err := e.markRoot(ctx, new); err != nil {
		return err
	}
	// 1. Record the intent in the old header, so that removing or renaming
	// it later first deletes a new header left by a crash.
	ha := h.clone()
	ha.flags = ha.flags&^flagPending | flagRenaming
	ha.link = new
	if err := e.writeHeader(ctx, old, ha); err != nil {
		vo.forgetLocked()
		return err
	}
	vo.mu.Lock()
	vo.hdr = ha
	vo.mu.Unlock()
	// 2. The new header, invisible while the old one exists.
	hb := ha.clone()
	hb.flags = hb.flags&^flagRenaming | flagPending
	hb.link = old
	if err := e.createHeader(ctx, new, hb); err != nil {
		return err
	}
	// 3. Commit: the old name goes. Whatever the delete reports, the
	// outcome is made durable before anyone may act on it.
	// If it did not happen, the new header stays invisible (flagPending)
	// while the old one exists and is deleted by the next remove or rename
	// of old (flagRenaming) or create of new.
	if gone, err := e.deleteHeader(ctx, old); !gone {
		return err
	}
	done = true
	// 4. Tidy: the new header no longer needs the old name.
	hb.flags &^= flagPending
	hb.link = ""
	tidy := e.writeHeader(ctx, new, hb) == nil
	if wasO && tidy {
		vo.mu.Lock()
		pages := vo.pages
		vo.mu.Unlock()
		vn.mu.Lock()
		vn.hdr, vn.pages, vn.session = hb, pages, false
		vn.mu.Unlock()
		keepN = true
	} else {
		vn.mu.Lock()
		vn.forget()
		vn.mu.Unlock()
		keepN = keepN || wasO
	}
	return nil
}

// Resize changes the size of volume name. Shrinking needs force: the
// blocks past the new size are dropped (and bytes past it in the new last
// block zeroed), so that growing again shows zeros there.
func (e *Engine) Resize(ctx context.Context, name string, size uint64, force bool) error {
	if err := e.resize(ctx, name, size, force); err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	return nil
}

func (e *Engine) resize(ctx context.Context, name string, size uint64, force bool) (err error) {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	v := e.vol(name)
	v.gate.Lock()
	defer v.gate.Unlock()
	defer forgetOnError(&err, v)
	was, err := e.tryLock(ctx, "resize", v)
	if err != nil {
		return err
	}
	defer e.release(ctx, v, was)
	h, err := e.heldHeader(ctx, v)
	if err != nil {
		return err
	}
	switch {
	case h.snapshot():
		return fmt.Errorf("volume %q is a snapshot: %w", name, errs.ErrReadOnly)
	case size == h.size:
		return nil
	case size < h.size && !force:
		return fmt.Errorf("volume %q: shrinking from %d to %d bytes needs force: %w", name, h.size, size, errs.ErrInvalid)
	}
	bs := uint64(h.blockSize)
	if tail := size % bs; size < h.size && tail != 0 {
		if err := e.cutTail(ctx, v, size/bs, tail); err != nil {
			return err
		}
	}
	v.commitMu.Lock()
	defer v.commitMu.Unlock()
	if err := e.ensureSession(ctx, v); err != nil {
		return err
	}
	v.mu.Lock()
	t, err := e.newTxn(ctx, v)
	if err == nil {
		err = t.resize(ctx, size)
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	return e.commitDropping(ctx, v, t)
}

// cutTail zeroes block's bytes from tail on (the new end of a shrunk
// volume), durably, so that a later grow reads zeros there.
func (e *Engine) cutTail(ctx context.Context, v *vol, block, tail uint64) error {
	v.mu.Lock()
	h, err := e.header(ctx, v)
	var ent entry
	if err == nil {
		ent, err = (&pager{e: e, h: h, v: v}).lookup(ctx, block)
	}
	v.mu.Unlock()
	if err != nil || !ent.present {
		return err
	}
	if !h.owned(ent.ref) {
		if err := e.makeWritable(ctx, v, []pending{{block: block, old: ent}}); err != nil {
			return err
		}
		v.mu.Lock()
		h, err = e.header(ctx, v)
		if err == nil {
			ent, err = (&pager{e: e, h: h, v: v}).lookup(ctx, block)
		}
		v.mu.Unlock()
		if err != nil {
			return err
		}
	}
	obj, err := dataName(h, ent.ref, block)
	if err != nil {
		return err
	}
	n, err := e.data.Stat(ctx, obj)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("volume %q: %w", v.name, err)
	case uint64(n) <= tail:
		return nil
	}
	if err := e.data.Truncate(ctx, obj, int64(tail)); err != nil {
		return fmt.Errorf("volume %q: %w", v.name, err)
	}
	return e.dataSync.sync(ctx)
}

// Info describes volume name (or the incarnation NAME/ID: see Ref).
func (e *Engine) Info(ctx context.Context, ref string) (Info, error) {
	name, id, err := parseRef(ref)
	if err != nil {
		return Info{}, fmt.Errorf("info: %w", err)
	}
	h, err := e.peekHeader(ctx, name)
	if err == nil {
		err = checkID(name, id, h)
	}
	if err != nil {
		return Info{}, fmt.Errorf("info: %w", err)
	}
	owner, err := e.locker.LockOwner(ctx, lockName(name))
	if err != nil && !errors.Is(err, errs.ErrNotFound) {
		return Info{}, fmt.Errorf("info: volume %q: %w", name, err)
	}
	return Info{Name: name, Size: h.size, BlockSize: h.blockSize, ReadOnly: h.snapshot(),
		Parent: h.parent, Epoch: h.alloc().epoch, LockOwner: owner}, nil
}

// List calls fn for every live volume and snapshot, in name order. A
// header that cannot be read is listed too (so it can be removed).
func (e *Engine) List(ctx context.Context, fn func(name string) error) error {
	var names []string
	err := e.maps.List(ctx, "", func(obj string) error {
		if ValidName(obj) != nil {
			return nil
		}
		if _, err := e.readHeader(ctx, obj); errors.Is(err, errs.ErrNotFound) {
			return nil
		}
		names = append(names, obj)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

// Open takes volume name's lock for the engine's owner (tried once;
// succeeds if already ours) and keeps it, with the map cached, until Close
// (also when sessions that wrote end meanwhile).
func (e *Engine) Open(ctx context.Context, name string) error {
	if err := e.hold(ctx, "open", name); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	return nil
}

// Lock takes volume name's lock, like Open.
func (e *Engine) Lock(ctx context.Context, name string) error {
	if err := e.hold(ctx, "lock", name); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	return nil
}

func (e *Engine) hold(ctx context.Context, op, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	v := e.vol(name)
	v.gate.Lock()
	defer v.gate.Unlock()
	// An explicit Open or Lock starts afresh after a fence (fence.go): it
	// takes the lock as the first time, or says who holds it.
	if err := e.confirm(ctx, v, 0); errors.Is(err, errs.ErrFenced) {
		v.mu.Lock()
		v.unfence()
		v.mu.Unlock()
	}
	was, err := e.tryLock(ctx, op, v)
	if err != nil {
		return err
	}
	if _, err := e.heldHeader(ctx, v); err != nil {
		e.release(ctx, v, was)
		return err
	}
	v.mu.Lock()
	v.pinned = true
	v.mu.Unlock()
	e.endIntent(v.name) // kept on purpose until Close/Unlock
	return nil
}

// Close ends an Open: it releases volume name's lock if the engine's owner
// holds it (also when taken by an earlier process of the same owner) and
// drops the cached map, unless sessions that may write are open on the
// volume: then the lock goes with the last of them. Closing a volume
// nobody holds is not an error; one another owner holds is
// (errs.ErrNotOwner), and one that does not exist is errs.ErrNotFound
// (a lock of ours left on the name is released all the same).
func (e *Engine) Close(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	v := e.vol(name)
	v.gate.Lock()
	v.mu.Lock()
	v.pinned = false
	_, writers := v.counts()
	if writers == 0 {
		v.unfence() // the connections that wrote before a fence are gone
	}
	var herr error
	if v.held {
		_, herr = e.header(ctx, v)
	}
	v.mu.Unlock()
	if !v.isHeld() {
		_, herr = e.readHeader(ctx, name)
	}
	if herr != nil && !errors.Is(herr, errs.ErrNotFound) {
		v.gate.Unlock()
		return fmt.Errorf("close: %w", herr)
	}
	if writers > 0 && herr == nil {
		v.gate.Unlock()
		return nil // the lock goes with the last writer (CloseSession)
	}
	v.mu.Lock()
	v.held = false
	v.forget()
	v.mu.Unlock()
	err := e.locker.Unlock(ctx, lockName(name), e.owner, false)
	v.gate.Unlock()
	if err != nil && !errors.Is(err, errs.ErrNotFound) {
		return fmt.Errorf("close: volume %q: %w", name, err)
	}
	if e.drain != nil {
		e.drain(context.WithoutCancel(ctx), name)
	}
	if herr != nil {
		return fmt.Errorf("close: %w", herr)
	}
	return nil
}

// Unlock releases volume name's lock (ErrNotFound, "is not locked", if
// nobody holds it); force breaks another owner's and fences the volume
// against the old holder: the volume moves to a fresh allocation identity,
// so that the old holder's late writes land only in objects nobody writes
// in place any more, and the old holder's engine fails its next map
// change and flush with errs.ErrFenced (fence.go). With force, a free lock
// is fenced all the same (a breaker may have crashed before it fenced).
func (e *Engine) Unlock(ctx context.Context, name string, force bool) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	v := e.vol(name)
	v.gate.Lock()
	defer v.gate.Unlock()
	if err := e.unlock(ctx, v, force); err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	v.mu.Lock()
	v.pinned = false
	v.mu.Unlock()
	return nil
}
