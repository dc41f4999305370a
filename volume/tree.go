package volume

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/archipelago-go/archipelago/errs"
)

// pager resolves map pages: through v's cache when v is set (the caller
// holds v.mu and v is held), else from storage with a memo for one call.
type pager struct {
	e    *Engine
	h    *header
	v    *vol
	memo map[pageKey]*page
	// private: without v, read every page from storage, and neither use
	// nor fill the engine's cache of shared pages (the collector's walks:
	// a page that looks shared to a header read a moment before may be
	// one a newer session of the volume owns and changes in place).
	private bool
}

func (pg *pager) get(ctx context.Context, key pageKey, r ref) (*page, error) {
	cache := pg.memo
	if pg.v != nil {
		cache = pg.v.pages
	}
	if p := cache[key]; p != nil && p.ref == r {
		return p, nil
	}
	// Without the lock, the pages the volume does not own are read once:
	// they are shared with a snapshot (or were left by an earlier epoch),
	// and nothing writes them in place, nor reuses their names.
	var sharedName string
	if pg.v == nil && !pg.private && !pg.h.owned(r) && settled(pg.h, r) {
		if name, err := pageName(pg.h, r, key); err == nil {
			sharedName = name
			if p := pg.e.shared.get(name); p != nil && p.pageKey == key {
				cache[key] = p
				return p, nil
			}
		}
	}
	p, err := pg.e.readPage(ctx, pg.h, key, r)
	if err != nil {
		return nil, err
	}
	if sharedName != "" {
		pg.e.shared.put(sharedName, p, pg.e.maxPages)
	}
	if pg.v != nil {
		pg.e.repairPage(ctx, pg.v, pg.h, p)
	}
	if pg.v != nil && len(cache) >= pg.e.maxPages {
		n := len(cache) / 4
		for k := range cache { // random order: drop a quarter
			if n--; n < 0 {
				break
			}
			delete(cache, k)
		}
	}
	cache[key] = p
	return p, nil
}

// settled tells whether object r, which header h does not own, is one
// that nobody writes in place any more: an epoch of its prefix at or
// below the highest h allocates under (older epochs are shared with a
// snapshot or left by a fence), or of a prefix h allocates nothing under
// (a clone's parent's). A page of a higher epoch was made by a session
// newer than h (h is a moment old: a reader without the lock): that
// session owns it and changes it in place, so it must not be kept as a
// shared page.
func settled(h *header, r ref) bool {
	top, any := uint64(0), false
	for _, s := range h.spans {
		if s.prefix == r.prefix {
			top, any = max(top, s.to), true
		}
	}
	return !any || r.epoch <= top
}

// leafKey is the leaf page holding block's entry.
func leafKey(block uint64) pageKey { return pageKey{0, block >> fanoutBits} }

func parentKey(k pageKey) pageKey { return pageKey{k.level + 1, k.index >> fanoutBits} }

// lookup returns the map entry of block.
func (pg *pager) lookup(ctx context.Context, block uint64) (entry, error) {
	h := pg.h
	ent := h.root
	for level := int(h.height()) - 1; level >= 0 && ent.present; level-- {
		key := pageKey{uint8(level), block >> (fanoutBits * uint(level+1))}
		p, err := pg.get(ctx, key, ent.ref)
		if err != nil {
			return entry{}, err
		}
		ent = p.e[(block>>(fanoutBits*uint(level)))%fanout]
	}
	return ent, nil
}

// walk calls fn, in block order, for every present leaf entry of blocks in
// [b0, b1), skipping absent subtrees.
func (pg *pager) walk(ctx context.Context, b0, b1 uint64, fn func(block uint64, e entry) error) error {
	h := pg.h
	if !h.root.present || b0 >= b1 {
		return nil
	}
	var rec func(key pageKey, r ref) error
	rec = func(key pageKey, r ref) error {
		p, err := pg.get(ctx, key, r)
		if err != nil {
			return err
		}
		width := uint64(1) << (fanoutBits * uint(key.level)) // blocks per entry
		base := key.index << (fanoutBits * uint(key.level+1))
		for i, e := range p.e {
			lo := base + uint64(i)*width
			if !e.present || lo >= b1 || lo+width <= b0 {
				continue
			}
			if key.level == 0 {
				err = fn(lo, e)
			} else {
				err = rec(pageKey{key.level - 1, lo >> (fanoutBits * uint(key.level))}, e.ref)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return rec(pageKey{h.height() - 1, 0}, h.root.ref)
}

// ownedObjects calls page for every page and data for every data object
// of the subtree at key (object r) that the volume owns alone. Owned pages
// are closed upward (a page is made owned together with its path to the
// root), so the walk never descends below a shared page.
func (pg *pager) ownedObjects(ctx context.Context, key pageKey, r ref, page, data func(name string)) error {
	h := pg.h
	if !h.owned(r) {
		return nil
	}
	p, err := pg.get(ctx, key, r)
	if err != nil {
		return err
	}
	for i, e := range p.e {
		if !e.present || !h.owned(e.ref) {
			continue
		}
		lo := key.index<<fanoutBits + uint64(i)
		if key.level == 0 {
			name, err := dataName(h, e.ref, lo)
			if err != nil {
				return err
			}
			data(name)
		} else if err := pg.ownedObjects(ctx, pageKey{key.level - 1, lo}, e.ref, page, data); err != nil {
			return err
		}
	}
	name, err := pageName(h, r, key)
	if err != nil {
		return err
	}
	page(name)
	return nil
}

// txn is one change of a volume's map: new versions of pages (clones of
// cached ones, or fresh pages under the allocation identity) and of the
// header, written leaves first by commit. Nothing cached changes before
// the writes succeed.
type txn struct {
	e        *Engine
	v        *vol
	pg       *pager
	h        *header
	hdrDirty bool
	pages    map[pageKey]*page
	fresh    map[pageKey]bool
	// dropped: subtrees or data objects no longer referenced that the
	// volume owned alone; deleted after the commit.
	dropped []dropped
}

type dropped struct {
	key  pageKey // page subtree root, if page
	page bool
	name string // data object, if !page
	ref  ref
}

// newTxn starts a change of held volume v. Caller holds v.commitMu and
// v.mu (released before commit).
func (e *Engine) newTxn(ctx context.Context, v *vol) (*txn, error) {
	h, err := e.header(ctx, v)
	if err != nil {
		return nil, err
	}
	t := &txn{e: e, v: v, h: h.clone(), pages: make(map[pageKey]*page), fresh: make(map[pageKey]bool)}
	t.pg = &pager{e: e, h: t.h, v: v}
	return t, nil
}

// get returns the current version of the page at key, or nil if the
// position is absent.
func (t *txn) get(ctx context.Context, key pageKey) (*page, error) {
	if p := t.pages[key]; p != nil {
		return p, nil
	}
	var ent entry
	if key.level == t.h.height()-1 {
		if key.index == 0 {
			ent = t.h.root
		}
	} else {
		parent, err := t.get(ctx, parentKey(key))
		if err != nil || parent == nil {
			return nil, err
		}
		ent = parent.e[key.index%fanout]
	}
	if !ent.present {
		return nil, nil
	}
	return t.pg.get(ctx, key, ent.ref)
}

// mutable returns a writable version of the page at key, creating or
// copying it and its path to the root as needed (copy-on-write of pages).
//
// An owned page is changed in place and alone: its path to the root is
// owned too (owned objects are closed upward) and does not change, so it
// is not rewritten.
func (t *txn) mutable(ctx context.Context, key pageKey) (*page, error) {
	if p := t.pages[key]; p != nil {
		return p, nil
	}
	root := key.level == t.h.height()-1
	if root && key.index != 0 {
		return nil, fmt.Errorf("map page %d/%d beyond the root: %w", key.level, key.index, errs.ErrInvalid)
	}
	cur, err := t.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if cur != nil && t.h.owned(cur.ref) {
		np := cur.clone()
		t.pages[key] = np
		return np, nil
	}
	var parent *page
	if !root {
		if parent, err = t.mutable(ctx, parentKey(key)); err != nil {
			return nil, err
		}
	}
	np := &page{pageKey: key}
	if cur != nil {
		np = cur.clone()
	}
	np.ref, np.seq = t.h.alloc(), 0
	t.pages[key], t.fresh[key] = np, true
	t.attach(parent, key, entry{present: true, ref: np.ref})
	return np, nil
}

func (t *txn) attach(parent *page, key pageKey, e entry) {
	if parent == nil {
		t.h.root = e
		t.hdrDirty = true
	} else {
		parent.e[key.index%fanout] = e
	}
}

// set points block's entry at e.
func (t *txn) set(ctx context.Context, block uint64, e entry) error {
	p, err := t.mutable(ctx, leafKey(block))
	if err != nil {
		return err
	}
	p.e[block%fanout] = e
	return nil
}

// zero makes every block of [b0, b1) a zero block, dropping whole
// subtrees where it can. It returns whether anything changed.
func (t *txn) zero(ctx context.Context, b0, b1 uint64) (bool, error) {
	if !t.h.root.present || b0 >= b1 {
		return false, nil
	}
	return t.zeroNode(ctx, pageKey{t.h.height() - 1, 0}, b0, b1)
}

func (t *txn) zeroNode(ctx context.Context, key pageKey, b0, b1 uint64) (bool, error) {
	p, err := t.get(ctx, key)
	if err != nil || p == nil {
		return false, err
	}
	width := uint64(1) << (fanoutBits * uint(key.level))
	base := key.index << (fanoutBits * uint(key.level+1))
	changed := false
	for i, e := range p.e {
		lo := base + uint64(i)*width
		if !e.present || lo >= b1 || lo+width <= b0 {
			continue
		}
		if b0 <= lo && lo+width <= b1 {
			mp, err := t.mutable(ctx, key)
			if err != nil {
				return false, err
			}
			mp.e[i] = entry{}
			changed = true
			if !t.h.owned(e.ref) {
				continue
			}
			if key.level == 0 {
				name, err := dataName(t.h, e.ref, lo)
				if err != nil {
					return false, err
				}
				t.dropped = append(t.dropped, dropped{name: name, ref: e.ref})
			} else {
				t.dropped = append(t.dropped, dropped{page: true, key: pageKey{key.level - 1, lo >> (fanoutBits * uint(key.level))}, ref: e.ref})
			}
			continue
		}
		c, err := t.zeroNode(ctx, pageKey{key.level - 1, lo >> (fanoutBits * uint(key.level))}, b0, b1)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	return changed, nil
}

// resize changes the size in the working header, adding root pages when
// the tree grows and dropping the right part of the tree when it shrinks.
// Bytes past the new size in its last block are the caller's business.
func (t *txn) resize(ctx context.Context, size uint64) error {
	oldNB := t.h.nblocks()
	nb := (size + uint64(t.h.blockSize) - 1) / uint64(t.h.blockSize)
	if nb < oldNB {
		if _, err := t.zero(ctx, nb, oldNB); err != nil {
			return err
		}
	}
	oldH, newH := t.h.height(), heightFor(nb)
	for ; oldH > newH; oldH-- { // the root's only child becomes the root
		root, err := t.get(ctx, pageKey{oldH - 1, 0})
		if err != nil {
			return err
		}
		if root == nil {
			break
		}
		if t.h.owned(root.ref) && !t.fresh[root.pageKey] {
			name, err := pageName(t.h, root.ref, root.pageKey)
			if err != nil {
				return err
			}
			t.dropped = append(t.dropped, dropped{name: name})
		}
		delete(t.pages, root.pageKey)
		delete(t.fresh, root.pageKey)
		t.h.root = root.e[0]
	}
	t.h.size = size
	for _, np := range growRoot(t.h, oldH) {
		t.pages[np.pageKey], t.fresh[np.pageKey] = np, true
	}
	t.hdrDirty = true
	return nil
}

// growRoot adds fresh root pages above a tree of height oldH until it is
// as high as h.size needs, each with the old root as its entry 0, and
// points h.root at the top one. It returns the new pages, lowest first.
func growRoot(h *header, oldH uint8) []*page {
	var ps []*page
	for ; h.root.present && oldH < h.height(); oldH++ {
		np := &page{pageKey: pageKey{oldH, 0}, ref: h.alloc()}
		np.e[0] = h.root
		ps = append(ps, np)
		h.root = entry{present: true, ref: np.ref}
	}
	return ps
}

// commit writes the txn: pages from the leaves up (a fresh page is durable
// before anything points at it), then the header; every write is FUA.
// Then it installs the new versions in v's cache. Caller holds v.commitMu,
// not v.mu. On error the caller must forget v's cache.
func (t *txn) commit(ctx context.Context) error {
	// Nothing is written under a lock another host broke (fence.go).
	if err := t.e.confirm(ctx, t.v, 0); err != nil {
		return err
	}
	keys := make([]pageKey, 0, len(t.pages))
	for k := range t.pages {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pageKey) int {
		if a.level != b.level {
			return int(a.level) - int(b.level)
		}
		if a.index < b.index {
			return -1
		}
		if a.index > b.index {
			return 1
		}
		return 0
	})
	for _, k := range keys {
		if err := t.e.writePage(ctx, t.h, t.pages[k], t.fresh[k]); err != nil {
			return fmt.Errorf("volume %q: %w", t.v.name, err)
		}
	}
	if t.hdrDirty {
		if err := t.e.writeHeader(ctx, t.v.name, t.h); err != nil {
			return err
		}
	}
	t.v.mu.Lock()
	t.v.hdr = t.h
	for k, p := range t.pages {
		t.v.pages[k] = p
	}
	t.v.mu.Unlock()
	return nil
}

// deleteDropped deletes, best effort, what a txn dropped that the volume
// owned alone, reading pages with header h. Whatever is left behind is
// garbage nothing points at.
func (e *Engine) deleteDropped(ctx context.Context, h *header, ds []dropped) {
	pg := &pager{e: e, h: h, memo: make(map[pageKey]*page)}
	var pages, datas []string
	addPage := func(n string) { pages = append(pages, n) }
	addData := func(n string) { datas = append(datas, n) }
	for _, d := range ds {
		switch {
		case d.page:
			_ = pg.ownedObjects(ctx, d.key, d.ref, addPage, addData)
		case isPageForm(d.name):
			addPage(d.name)
		default:
			addData(d.name)
		}
	}
	for _, n := range datas {
		_ = e.data.Delete(ctx, n)
	}
	for _, n := range pages {
		_ = e.maps.Delete(ctx, n)
	}
}

// sharedPages is a bounded cache of map pages no reader's volume owns,
// by object name. Safe for concurrent use.
type sharedPages struct {
	mu    sync.Mutex
	pages map[string]*page
}

func (c *sharedPages) get(name string) *page {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pages[name]
}

// put caches p under name, dropping a quarter of the pages (in random
// order) when max are cached.
func (c *sharedPages) put(name string, p *page, max int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pages == nil {
		c.pages = make(map[string]*page)
	}
	if len(c.pages) >= max {
		n := len(c.pages) / 4
		for k := range c.pages {
			if n--; n < 0 {
				break
			}
			delete(c.pages, k)
		}
	}
	c.pages[name] = p
}
