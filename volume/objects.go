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

	"github.com/archipelago-go/archipelago/errs"
)

func notFound(name string) error {
	return fmt.Errorf("volume %q: %w", name, errs.ErrNotFound)
}

// readObject reads a dual-slot object. ErrNotFound if it does not exist.
func (e *Engine) readObject(ctx context.Context, k kind, name string) (uint64, []byte, error) {
	b := make([]byte, 2*k.slot)
	if _, err := e.maps.ReadAt(ctx, name, b, 0); err != nil {
		return 0, nil, err
	}
	seq, payload, err := decodeObject(k, b)
	if err != nil {
		return 0, nil, fmt.Errorf("object %q: %w", name, err)
	}
	return seq, payload, nil
}

// readHeaderRaw reads the header object name as stored, without the
// visibility rule of renames. ErrNotFound if absent or uncommitted.
func (e *Engine) readHeaderRaw(ctx context.Context, name string) (*header, error) {
	seq, payload, err := e.readObject(ctx, kindHeader, name)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, notFound(name)
		}
		return nil, fmt.Errorf("volume %q: %w", name, err)
	}
	h, err := decodeHeader(payload)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", name, err)
	}
	h.seq = seq
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

// writeSlot writes one slot of a dual-slot object with FUA.
func (e *Engine) writeSlot(ctx context.Context, k kind, name string, seq uint64, payload []byte) error {
	b, err := encodeSlot(k, seq, payload)
	if err != nil {
		return fmt.Errorf("object %q: %w", name, err)
	}
	return e.maps.WriteAt(ctx, name, b, int64(seq%2)*int64(k.slot), true)
}

// createObject writes a new dual-slot object: slot 0, then slot 1, so
// that a torn first write leaves an uncommitted object. If an object of a
// live name may be there (a stale header), the caller deletes it first.
func (e *Engine) createObject(ctx context.Context, k kind, name string, payload []byte) error {
	if err := e.writeSlot(ctx, k, name, 0, payload); err != nil {
		return err
	}
	return e.writeSlot(ctx, k, name, 1, payload)
}

// writeHeader updates a header in place (the older slot) and sets h.seq.
func (e *Engine) writeHeader(ctx context.Context, name string, h *header) error {
	if err := e.writeSlot(ctx, kindHeader, name, h.seq+1, encodeHeader(h)); err != nil {
		return fmt.Errorf("volume %q: write header: %w", name, err)
	}
	h.seq++
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
	h.seq = 1
	return nil
}

// bumpEpoch hands out the next epoch for objects named after name and
// makes it durable. Caller holds name's lock and gate.
func (e *Engine) bumpEpoch(ctx context.Context, name string) (uint64, error) {
	rec := epochName(name)
	seq, payload, err := e.readObject(ctx, kindEpoch, rec)
	var cur uint64
	fresh := false
	switch {
	case errors.Is(err, errs.ErrNotFound):
		fresh = true
	case err != nil:
		return 0, fmt.Errorf("volume %q: epoch record: %w", name, err)
	default:
		if cur, err = decodeEpoch(payload); err != nil {
			return 0, fmt.Errorf("volume %q: epoch record: %w", name, err)
		}
	}
	next := cur + 1
	if fresh {
		err = e.createObject(ctx, kindEpoch, rec, encodeEpoch(next))
	} else {
		err = e.writeSlot(ctx, kindEpoch, rec, seq+1, encodeEpoch(next))
	}
	if err != nil {
		return 0, fmt.Errorf("volume %q: epoch record: %w", name, err)
	}
	return next, nil
}

// readPage reads the page at key from object r of a volume with header h.
func (e *Engine) readPage(ctx context.Context, h *header, key pageKey, r ref) (*page, error) {
	name, err := pageName(h, r, key)
	if err != nil {
		return nil, err
	}
	seq, payload, err := e.readObject(ctx, kindPage, name)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			// A reachable page is always complete.
			return nil, fmt.Errorf("map page %q missing: %w", name, errs.ErrCorrupt)
		}
		return nil, err
	}
	p, err := decodePage(payload, key)
	if err != nil {
		return nil, fmt.Errorf("map page %q: %w", name, err)
	}
	p.ref, p.seq = r, seq
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

// writePage writes p: a fresh page as a whole new object (slot 0, and a
// zeroed slot 1 that erases any orphan under the name), an owned one in
// place. It sets p.seq.
func (e *Engine) writePage(ctx context.Context, h *header, p *page, fresh bool) error {
	name, err := pageName(h, p.ref, p.pageKey)
	if err != nil {
		return err
	}
	payload := encodePage(p)
	if fresh {
		s0, err := encodeSlot(kindPage, 0, payload)
		if err != nil {
			return err
		}
		b := append(s0, make([]byte, kindPage.slot)...)
		if err := e.maps.WriteAt(ctx, name, b, 0, true); err != nil {
			return fmt.Errorf("map page %q: %w", name, err)
		}
		p.seq = 0
		return nil
	}
	if err := e.writeSlot(ctx, kindPage, name, p.seq+1, payload); err != nil {
		return fmt.Errorf("map page %q: %w", name, err)
	}
	p.seq++
	return nil
}

func newID() [16]byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return id
}
