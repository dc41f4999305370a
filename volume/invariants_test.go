package volume

import (
	"context"
	"testing"
)

// checkInvariants walks every live volume's map straight from storage and
// checks that every page decodes, and that no object a volume owns (would
// write in place) is reachable from any other volume: nothing shared is
// ever written in place.
func checkInvariants(t testing.TB, v *env) {
	t.Helper()
	ctx := context.Background()
	e, err := New(v.maps, v.data, Options{Owner: "invariant-checker"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := e.List(ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	owner := make(map[string]string)  // object -> volume owning it
	refs := make(map[string][]string) // object -> volumes reaching it
	for _, name := range names {
		h, err := e.readHeader(ctx, name)
		if err != nil {
			t.Fatalf("invariants: %s: %v", name, err)
		}
		if !h.root.present {
			continue
		}
		pg := &pager{e: e, h: h, memo: make(map[pageKey]*page)}
		seen := make(map[string]bool)
		note := func(obj string, r ref) {
			if seen[obj] {
				return
			}
			seen[obj] = true
			refs[obj] = append(refs[obj], name)
			if h.owned(r) {
				if o, ok := owner[obj]; ok {
					t.Fatalf("invariants: %s is owned by both %s and %s", obj, o, name)
				}
				owner[obj] = name
			}
		}
		var rec func(key pageKey, r ref)
		rec = func(key pageKey, r ref) {
			p, err := pg.get(ctx, key, r)
			if err != nil {
				t.Fatalf("invariants: %s page %v: %v", name, key, err)
			}
			pn, _ := pageName(h, r, key)
			note(pn, r)
			for i, ent := range p.e {
				if !ent.present {
					continue
				}
				lo := key.index<<fanoutBits + uint64(i)
				if key.level == 0 {
					if lo >= h.nblocks() {
						t.Fatalf("invariants: %s maps block %d beyond its %d blocks", name, lo, h.nblocks())
					}
					dn, err := dataName(h, ent.ref, lo)
					if err != nil {
						t.Fatal(err)
					}
					note(dn, ent.ref)
				} else {
					if h.owned(ent.ref) && !h.owned(r) {
						t.Fatalf("invariants: %s: owned page below shared page %s", name, pn)
					}
					rec(pageKey{key.level - 1, lo}, ent.ref)
				}
			}
		}
		rec(pageKey{h.height() - 1, 0}, h.root.ref)
	}
	for obj, o := range owner {
		if len(refs[obj]) > 1 {
			t.Fatalf("invariants: %s is owned (written in place) by %s but shared with %v", obj, o, refs[obj])
		}
	}
}
