package volume

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// reached is one object a volume's map reaches, as reach reports it.
type reached struct {
	name  string  // object name (maps store for a page, data store for data)
	page  bool    // a map page; else a data object
	key   pageKey // a page's level and index; for data, level 0 and the block
	ref   ref     // the entry that named it (prefix index into h.prefixes, epoch)
	owned bool    // the volume owns it (writes it in place)
	// parent is the page whose entry named this object ("" for the root).
	parent string
}

// reach calls fn once for every map page and data object that header h
// (of volume name) reaches, parents before children, reading pages from
// storage without the lock (pages a volume does not own are shared and
// never change; owned ones are read as they are now). A page that cannot
// be read is reported to fn as reached (with its name) and then as the
// error of the walk, unless fn's return for it says to go on: fn may
// return errSkip to leave the subtree below a page out (it is the error
// of neither). The first other error fn returns ends the walk.
func (e *Engine) reach(ctx context.Context, name string, h *header, fn func(o reached) error) error {
	return e.reachVia(ctx, name, h, false, fn)
}

// reachPrivate is reach reading every page from storage, without the
// engine's cache of shared pages (see pager.private).
func (e *Engine) reachPrivate(ctx context.Context, name string, h *header, fn func(o reached) error) error {
	return e.reachVia(ctx, name, h, true, fn)
}

func (e *Engine) reachVia(ctx context.Context, name string, h *header, private bool, fn func(o reached) error) error {
	if !h.root.present {
		return nil
	}
	pg := &pager{e: e, h: h, memo: make(map[pageKey]*page), private: private}
	var rec func(key pageKey, r ref, parent string) error
	rec = func(key pageKey, r ref, parent string) error {
		pn, err := pageName(h, r, key)
		if err != nil {
			return fmt.Errorf("volume %q page %v: %w", name, key, err)
		}
		switch err := fn(reached{name: pn, page: true, key: key, ref: r, owned: h.owned(r), parent: parent}); {
		case err == errSkip:
			return nil
		case err != nil:
			return err
		}
		p, err := pg.get(ctx, key, r)
		if err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
		delete(pg.memo, key) // each page is visited once: keep memory flat
		for i, ent := range p.e {
			if !ent.present {
				continue
			}
			lo := key.index<<fanoutBits + uint64(i)
			if key.level > 0 {
				if err := rec(pageKey{key.level - 1, lo}, ent.ref, pn); err != nil {
					return err
				}
				continue
			}
			dn, err := dataName(h, ent.ref, lo)
			if err != nil {
				return fmt.Errorf("volume %q block %d: %w", name, lo, err)
			}
			if err := fn(reached{name: dn, key: pageKey{0, lo}, ref: ent.ref, owned: h.owned(ent.ref), parent: pn}); err != nil && err != errSkip {
				return err
			}
		}
		return nil
	}
	return rec(pageKey{h.height() - 1, 0}, h.root.ref, "")
}

// errSkip, returned by reach's fn for a page, leaves its subtree out.
var errSkip = fmt.Errorf("skip this subtree")

// objectName is an object name taken apart: a data object
// <prefix>_<epoch>_<block> or a map page <prefix>_<epoch>_m<level>_<index>.
type objectName struct {
	prefix string
	epoch  uint64
	page   bool
	key    pageKey // page: level and index; data: level 0, index = block
}

// parseObjectName takes a data object or map page name apart; ok is false
// for any other name (headers, epoch records, locks, anything else).
func parseObjectName(s string) (o objectName, ok bool) {
	hex := func(t string) uint64 {
		x, _ := strconv.ParseUint(t, 16, 64)
		return x
	}
	switch {
	case isPageForm(s):
		t := s[len(s)-37:] // _<16>_m<d>_<16>
		o = objectName{prefix: s[:len(s)-37], epoch: hex(t[1:17]), page: true,
			key: pageKey{t[19] - '0', hex(t[21:])}}
	case isDataForm(s):
		t := s[len(s)-34:] // _<16>_<16>
		o = objectName{prefix: s[:len(s)-34], epoch: hex(t[1:17]), key: pageKey{0, hex(t[18:])}}
	default:
		return objectName{}, false
	}
	if o.prefix == "" || strings.HasPrefix(o.prefix, legacyPrefix) {
		return objectName{}, false
	}
	return o, true
}
