package volume

// Storage access: reading and writing the dual-slot map objects (headers,
// map pages, epoch records) in the maps store. The slot format is in
// format.go; which object is read or written when is the business of
// ops.go, io.go and tree.go.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/archipelago-go/archipelago/errs"
)

func notFound(name string) error {
	return fmt.Errorf("volume %q: %w", name, errs.ErrNotFound)
}

// readObject reads a dual-slot object. ErrNotFound if it does not exist
// (or is uncommitted). A copy found damaged is logged; an object that
// cannot be read is logged too, and the error names it.
func (e *Engine) readObject(ctx context.Context, k kind, name string) (object, error) {
	b := make([]byte, 2*k.slot)
	if _, err := e.maps.ReadAt(ctx, name, b, 0); err != nil {
		return object{}, err
	}
	o, err := decodeObject(k, b)
	if err != nil {
		err = fmt.Errorf("object %q: %w", name, err)
		if !errors.Is(err, errs.ErrNotFound) {
			e.dmg.unreadable(name, err)
		}
		return object{}, err
	}
	e.dmg.damaged(k, name, o)
	return o, nil
}

// readHeaderRaw reads the header object name as stored, without the
// visibility rule of renames. ErrNotFound if absent or uncommitted.
func (e *Engine) readHeaderRaw(ctx context.Context, name string) (*header, error) {
	o, err := e.readObject(ctx, kindHeader, name)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, notFound(name)
		}
		return nil, fmt.Errorf("volume %q: %w", name, err)
	}
	h, err := decodeHeader(o.payload)
	if err != nil {
		err = fmt.Errorf("volume %q: header object %q: %w", name, name, err)
		e.dmg.unreadable(name, err)
		return nil, err
	}
	h.seq, h.stale, h.fix = o.seq, o.stale, o.fix
	return h, nil
}

// readHeader reads the header of a live volume. A header written by a
// rename that did not finish (flagPending while the old header with the
// same id still exists) is not a volume: ErrNotFound.
func (e *Engine) readHeader(ctx context.Context, name string) (*header, error) {
	h, err := e.readHeaderRaw(ctx, name)
	if err != nil {
		return nil, err
	}
	if h.flags&flagPending != 0 {
		old, err := e.readHeaderRaw(ctx, h.link)
		switch {
		case err == nil && old.id == h.id:
			return nil, notFound(name)
		case err != nil && !errors.Is(err, errs.ErrNotFound):
			return nil, fmt.Errorf("volume %q: renamed from %q: %w", name, h.link, err)
		}
	}
	return h, nil
}

// writeSlot writes slot i of a dual-slot object with FUA.
func (e *Engine) writeSlot(ctx context.Context, k kind, name string, i int, b []byte) error {
	return e.maps.WriteAt(ctx, name, b, int64(i)*int64(k.slot), true)
}

// slotOrder is the order in which an update writes the two slots: first
// the slots in stale (they do not hold the current state), so that until
// the last write completes one slot still holds the current state or the
// new one; with none stale, slot seq%2 first.
func slotOrder(seq uint64, stale uint8) [2]int {
	switch {
	case stale == 2:
		return [2]int{1, 0}
	case stale == 0 && seq%2 == 1:
		return [2]int{1, 0}
	}
	return [2]int{0, 1}
}

// updateObject writes payload with seq into both slots of an existing
// object, one FUA write after the other, the stale slots first. A crash
// leaves the old state in both slots, or in one (the other torn or
// holding the new state), or the new state in one or both: a read finds
// the old or the new state.
func (e *Engine) updateObject(ctx context.Context, k kind, name string, seq uint64, payload []byte, stale uint8) error {
	b, err := encodeSlot(k, seq, payload)
	if err != nil {
		return fmt.Errorf("object %q: %w", name, err)
	}
	for _, i := range slotOrder(seq, stale) {
		if err := e.writeSlot(ctx, k, name, i, b); err != nil {
			return err
		}
	}
	return nil
}

// createObject writes a new dual-slot object with sequence number 1: slot
// 1, then slot 0, so that a torn first write leaves slot 0 empty, an
// uncommitted object. If an object of a live name may be there (a stale
// header), the caller deletes it first.
func (e *Engine) createObject(ctx context.Context, k kind, name string, payload []byte) error {
	b, err := encodeSlot(k, 1, payload)
	if err != nil {
		return fmt.Errorf("object %q: %w", name, err)
	}
	if err := e.writeSlot(ctx, k, name, 1, b); err != nil {
		return err
	}
	return e.writeSlot(ctx, k, name, 0, b)
}

// repairObject rewrites the slots in fix with the state (seq, payload)
// read from the object, the stale ones first, and returns the slots still
// stale afterwards. Rewriting a slot with the state the other slot holds
// changes nothing a read can find, whenever it stops; the caller makes
// sure that nothing else writes the object meanwhile.
func (e *Engine) repairObject(ctx context.Context, k kind, name string, seq uint64, payload []byte, stale, fix uint8) uint8 {
	b, err := encodeSlot(k, seq, payload)
	if err != nil {
		return stale
	}
	var done []int
	for _, i := range slotOrder(seq, stale) {
		if fix&(1<<i) == 0 {
			continue
		}
		if err := e.writeSlot(ctx, k, name, i, b); err != nil {
			e.dmg.log().Warn("map object repair failed", "object", name, "kind", k.what,
				"slot", i, "seq", seq, "err", err)
			return stale | 1<<i
		}
		stale &^= 1 << i
		done = append(done, i)
	}
	e.dmg.repaired(name)
	e.dmg.log().Info("map object repaired", "object", name, "kind", k.what, "slots", done, "seq", seq)
	return stale
}

// repairHeader repairs the header h of v just read, if it needs it and
// no change of v is in progress (its commit mutex is free: a commit
// writes the header without v.mu). Caller holds v.mu, and v is held.
func (e *Engine) repairHeader(ctx context.Context, v *vol, h *header) {
	if h.fix == 0 || !v.commitMu.TryLock() {
		return
	}
	defer v.commitMu.Unlock()
	h.stale = e.repairObject(ctx, kindHeader, v.name, h.seq, encodeHeader(h), h.stale, h.fix)
	h.fix = h.stale
}

// repairPage is repairHeader for a page of v's map (owned by v, which
// holds its lock, or shared: never written in place by anyone).
func (e *Engine) repairPage(ctx context.Context, v *vol, h *header, p *page) {
	if p.fix == 0 || !v.commitMu.TryLock() {
		return
	}
	defer v.commitMu.Unlock()
	name, err := pageName(h, p.ref, p.pageKey)
	if err != nil {
		return
	}
	p.stale = e.repairObject(ctx, kindPage, name, p.seq, encodePage(p), p.stale, p.fix)
	p.fix = p.stale
}

// writeHeader updates a header in place (both slots) and sets h.seq.
func (e *Engine) writeHeader(ctx context.Context, name string, h *header) error {
	if err := e.updateObject(ctx, kindHeader, name, h.seq+1, encodeHeader(h), h.stale); err != nil {
		return fmt.Errorf("volume %q: write header: %w", name, err)
	}
	h.seq++
	h.stale, h.fix = 0, 0
	return nil
}

// createHeader writes the header of a new volume. An object left under
// the name (an uncommitted or unfinished-rename header) is removed first.
func (e *Engine) createHeader(ctx context.Context, name string, h *header) error {
	payload := encodeHeader(h)
	if _, err := encodeSlot(kindHeader, 0, payload); err != nil {
		return fmt.Errorf("volume %q: header: %w (too many clone generations or renames)", name, err)
	}
	if _, err := e.maps.Stat(ctx, name); err == nil {
		if err := e.maps.Delete(ctx, name); err != nil && !errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("volume %q: remove stale header: %w", name, err)
		}
		if err := e.mapsSync.sync(ctx); err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
	} else if !errors.Is(err, errs.ErrNotFound) {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	if err := e.createObject(ctx, kindHeader, name, payload); err != nil {
		return fmt.Errorf("volume %q: write header: %w", name, err)
	}
	h.seq, h.stale, h.fix = 1, 0, 0
	return nil
}

// bumpEpoch hands out the next epoch for objects named after name and
// makes it durable. Caller holds name's lock and gate.
func (e *Engine) bumpEpoch(ctx context.Context, name string) (uint64, error) {
	return e.bumpEpochAbove(ctx, name, 0)
}

// bumpEpochAbove is bumpEpoch for a name whose objects already use epochs
// up to used (see usedEpoch): a record that is missing or not above used
// went back (deleted, or damaged beyond its redundancy) and would hand out
// names of existing objects; that is ErrCorrupt, and nothing is written.
func (e *Engine) bumpEpochAbove(ctx context.Context, name string, used uint64) (uint64, error) {
	rec := epochName(name)
	o, err := e.readObject(ctx, kindEpoch, rec)
	var cur uint64
	fresh := false
	switch {
	case errors.Is(err, errs.ErrNotFound):
		fresh = true
	case err != nil:
		return 0, fmt.Errorf("volume %q: epoch record: %w", name, err)
	default:
		if cur, err = decodeEpoch(o.payload); err != nil {
			err = fmt.Errorf("volume %q: epoch record %q: %w", name, rec, err)
			e.dmg.unreadable(rec, err)
			return 0, err
		}
	}
	if cur < used {
		what := fmt.Sprintf("at epoch %d", cur)
		if fresh {
			what = "missing"
		}
		err := fmt.Errorf("volume %q: epoch record %q %s, but the volume uses epoch %d already: %w",
			name, rec, what, used, errs.ErrCorrupt)
		e.dmg.unreadable(rec, err)
		return 0, err
	}
	next := cur + 1
	if fresh {
		err = e.createObject(ctx, kindEpoch, rec, encodeEpoch(next))
	} else {
		err = e.updateObject(ctx, kindEpoch, rec, o.seq+1, encodeEpoch(next), o.stale)
	}
	if err != nil {
		return 0, fmt.Errorf("volume %q: epoch record: %w", name, err)
	}
	return next, nil
}

// usedEpoch is the highest epoch h's spans use under prefix name (0 if
// none).
func usedEpoch(h *header, name string) uint64 {
	var ep uint64
	for _, s := range h.spans {
		if int(s.prefix) < len(h.prefixes) && h.prefixes[s.prefix] == name {
			ep = max(ep, s.to)
		}
	}
	return ep
}

// readPage reads the page at key from object r of a volume with header h.
func (e *Engine) readPage(ctx context.Context, h *header, key pageKey, r ref) (*page, error) {
	name, err := pageName(h, r, key)
	if err != nil {
		return nil, err
	}
	o, err := e.readObject(ctx, kindPage, name)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			// A reachable page is always complete.
			err = fmt.Errorf("map page %q missing: %w", name, errs.ErrCorrupt)
			e.dmg.unreadable(name, err)
		}
		return nil, err
	}
	p, err := decodePage(o.payload, key)
	if err != nil {
		err = fmt.Errorf("map page %q: %w", name, err)
		e.dmg.unreadable(name, err)
		return nil, err
	}
	p.ref, p.seq, p.stale, p.fix = r, o.seq, o.stale, o.fix
	return p, nil
}

func pageName(h *header, r ref, key pageKey) (string, error) {
	if r.prefix >= uint32(len(h.prefixes)) {
		return "", fmt.Errorf("map entry with prefix %d of %d: %w", r.prefix, len(h.prefixes), errs.ErrCorrupt)
	}
	return pageObject(h.prefixes[r.prefix], r.epoch, key), nil
}

func dataName(h *header, r ref, block uint64) (string, error) {
	if r.prefix >= uint32(len(h.prefixes)) {
		return "", fmt.Errorf("map entry with prefix %d of %d: %w", r.prefix, len(h.prefixes), errs.ErrCorrupt)
	}
	return DataObject(h.prefixes[r.prefix], r.epoch, block), nil
}

// writePage writes p: a fresh page as a whole new object in one FUA write
// of both slots (sequence number 0; nothing points at it before the write
// returns, and it replaces any orphan under the name), an owned one in
// place (both slots, see updateObject). It sets p.seq.
func (e *Engine) writePage(ctx context.Context, h *header, p *page, fresh bool) error {
	name, err := pageName(h, p.ref, p.pageKey)
	if err != nil {
		return err
	}
	payload := encodePage(p)
	if fresh {
		s, err := encodeSlot(kindPage, 0, payload)
		if err != nil {
			return err
		}
		if err := e.maps.WriteAt(ctx, name, append(s, s...), 0, true); err != nil {
			return fmt.Errorf("map page %q: %w", name, err)
		}
		p.seq, p.stale, p.fix = 0, 0, 0
		return nil
	}
	if err := e.updateObject(ctx, kindPage, name, p.seq+1, payload, p.stale); err != nil {
		return fmt.Errorf("map page %q: %w", name, err)
	}
	p.seq++
	p.stale, p.fix = 0, 0
	return nil
}

func newID() [16]byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return id
}

// damageLog reports damaged copies and unreadable map objects, each
// object's condition once (reads without the lock find it every time).
type damageLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	seen   map[string]string // object -> what was last reported
}

func (d *damageLog) log() *slog.Logger {
	if d.logger != nil {
		return d.logger
	}
	return slog.Default()
}

// first tells whether state is news for object name, and notes it.
func (d *damageLog) first(name, state string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[name] == state {
		return false
	}
	if d.seen == nil || len(d.seen) >= 4096 {
		d.seen = make(map[string]string)
	}
	d.seen[name] = state
	return true
}

func (d *damageLog) repaired(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.seen, name)
}

// damaged logs the damaged or missing copies of object name, read as o.
func (d *damageLog) damaged(k kind, name string, o object) {
	if o.damage == [2]string{} || !d.first(name, fmt.Sprintf("%d %q", o.seq, o.damage)) {
		return
	}
	for i, what := range o.damage {
		if what != "" {
			d.log().Warn("map object copy damaged; the other copy is read", "object", name, "kind", k.what,
				"slot", i, "problem", what, "seq", o.seq)
		}
	}
}

// unreadable logs a map object that cannot be read.
func (d *damageLog) unreadable(name string, err error) {
	if d.first(name, err.Error()) {
		d.log().Error("map object unreadable", "object", name, "err", err)
	}
}
