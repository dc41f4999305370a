package volume

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Check walks every live volume's map straight from the maps store (no
// lock taken, nothing cached) and checks that every header and page
// decodes, that no map entry points beyond its volume's size, that no
// owned page hangs below a shared one, and that no object a volume owns
// (writes in place) is reachable from any other volume: nothing shared is
// ever written in place. It returns the first violation, naming the
// volumes and the object, wrapping errs.ErrCorrupt (or the read error).
//
// Run it while no map changes (a volume removed or renamed during the
// walk may be reported).
func Check(ctx context.Context, maps store.Store) error {
	e, err := New(maps, maps, Options{Owner: "invariant-checker"})
	if err != nil {
		return err
	}
	var names []string
	if err := e.List(ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		return err
	}
	return e.check(ctx, names)
}

// check is Check of the volumes named (a list of a shared directory or a
// RADOS pool can cost far more than the walk).
func (e *Engine) check(ctx context.Context, names []string) error {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("check: "+format+": %w", append(args, errs.ErrCorrupt)...)
	}
	owner := make(map[string]string)  // object -> volume owning it
	refs := make(map[string][]string) // object -> volumes reaching it
	for _, name := range names {
		h, err := e.readHeader(ctx, name)
		if err != nil {
			return fmt.Errorf("check: volume %q: %w", name, err)
		}
		if !h.root.present {
			continue
		}
		pg := &pager{e: e, h: h, memo: make(map[pageKey]*page)}
		seen := make(map[string]bool)
		note := func(obj string, r ref) error {
			if seen[obj] {
				return nil
			}
			seen[obj] = true
			refs[obj] = append(refs[obj], name)
			if h.owned(r) {
				if o, ok := owner[obj]; ok {
					return corrupt("object %s is owned by both volume %q and %q", obj, o, name)
				}
				owner[obj] = name
			}
			return nil
		}
		var rec func(key pageKey, r ref) error
		rec = func(key pageKey, r ref) error {
			p, err := pg.get(ctx, key, r)
			if err != nil {
				return fmt.Errorf("check: volume %q page %v: %w", name, key, err)
			}
			pn, err := pageName(h, r, key)
			if err != nil {
				return fmt.Errorf("check: volume %q page %v: %w", name, key, err)
			}
			if err := note(pn, r); err != nil {
				return err
			}
			for i, ent := range p.e {
				if !ent.present {
					continue
				}
				lo := key.index<<fanoutBits + uint64(i)
				if key.level == 0 {
					if lo >= h.nblocks() {
						return corrupt("volume %q maps block %d beyond its %d blocks (page %s)", name, lo, h.nblocks(), pn)
					}
					dn, err := dataName(h, ent.ref, lo)
					if err != nil {
						return fmt.Errorf("check: volume %q block %d: %w", name, lo, err)
					}
					if err := note(dn, ent.ref); err != nil {
						return err
					}
					continue
				}
				if h.owned(ent.ref) && !h.owned(r) {
					return corrupt("volume %q: owned page below the shared page %s", name, pn)
				}
				if err := rec(pageKey{key.level - 1, lo}, ent.ref); err != nil {
					return err
				}
			}
			return nil
		}
		if err := rec(pageKey{h.height() - 1, 0}, h.root.ref); err != nil {
			return err
		}
	}
	for obj, o := range owner {
		if len(refs[obj]) > 1 {
			return corrupt("object %s is owned (written in place) by volume %q but shared with %q", obj, o, refs[obj])
		}
	}
	return nil
}
