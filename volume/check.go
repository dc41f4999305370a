package volume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// The map checker (vlmc check, docs/maps.md "Checking"): a read-only walk
// of headers, map pages, epoch records and the data objects the maps
// reach, straight from storage (no lock, no cache, no repair, no log),
// that reports every violation it finds rather than the first.

// Problem kinds (Problem.Kind).
const (
	// ProblemUnreadable: a header, map page or epoch record that exists
	// but of which no copy can be read (both damaged, truncated, contents
	// that do not decode, a page at another position, a newer format).
	ProblemUnreadable = "unreadable"
	// ProblemDangling: a map entry (or a header's root) names a map page
	// that does not exist, or holds no copy at all (truncated to nothing).
	ProblemDangling = "dangling"
	// ProblemDamagedCopy: one copy of a map object is damaged, torn,
	// missing or stale (an update interrupted); the other is read, so
	// nothing is lost yet, but the object has no redundancy left until the
	// engine rewrites it (its next update, or a read under the lock).
	ProblemDamagedCopy = "damaged-copy"
	// ProblemOwnedBelowShared: a page the volume owns (writes in place)
	// hangs below a page it does not own.
	ProblemOwnedBelowShared = "owned-below-shared"
	// ProblemOwnedTwice: an object the volume owns is owned by another
	// volume too (their epoch spans overlap).
	ProblemOwnedTwice = "owned-twice"
	// ProblemOwnedShared: the volume reaches an object another volume
	// owns, which that volume may change in place under it.
	ProblemOwnedShared = "owned-shared"
	// ProblemBeyondSize: a leaf entry maps a block past the volume's size.
	ProblemBeyondSize = "beyond-size"
	// ProblemBadPrefix: a map entry names a prefix outside the header's
	// prefix table (it names no object).
	ProblemBadPrefix = "bad-prefix"
	// ProblemMissingData: a mapped data object does not exist. The block
	// reads as zeros: either data was lost, or a first write of a zero
	// block was cut between its map update and its data write (a crash:
	// nothing acknowledged is lost then). A write in flight is not
	// reported: the object is looked for again after a pause.
	ProblemMissingData = "missing-data"
	// ProblemEpochBehind: a name's epoch record is below an epoch in use
	// under that name (a header's span, or an object reached): the next
	// session would name new objects like existing ones.
	ProblemEpochBehind = "epoch-behind"
	// ProblemEpochMissing: no epoch record for a name that epochs in use
	// are named after.
	ProblemEpochMissing = "epoch-missing"
)

// Problem is one violation found by CheckVolumes: Kind (a Problem…
// constant) at Object (a header, map page, epoch record or data object)
// found while checking Volume; Detail says what and where.
type Problem struct {
	Volume string `json:"volume"`
	Object string `json:"object"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	return fmt.Sprintf("volume %q: %s: %s: %s", p.Volume, p.Object, p.Kind, p.Detail)
}

// CheckReport is what CheckVolumes found.
type CheckReport struct {
	Volumes     int `json:"volumes"`      // volumes checked
	Pages       int `json:"pages"`        // map pages read (a shared page counts once)
	DataObjects int `json:"data_objects"` // mapped data objects looked for (a shared one counts once)
	// Problems, sorted by volume, object and kind; at most
	// maxListedProblems of one kind per volume.
	Problems []Problem `json:"problems"`
	// Omitted counts the problems found beyond those listed.
	Omitted int `json:"omitted,omitempty"`
}

const (
	// maxListedProblems bounds the problems of one kind listed per volume
	// (a header copied to another name makes every object it reaches a
	// problem).
	maxListedProblems = 100
	// maxSeen bounds the sets of objects already counted or looked for;
	// past it an object may be counted (and looked for) again.
	maxSeen = 1 << 20
	// statWorkers is how many data objects are looked for at once.
	statWorkers = 16
)

// checkSettle is the pause before the second look at what the first walk
// found (see CheckVolumes): longer than the two writes of a map object's
// update or the data write that follows a zero block's map update take.
const checkSettle = time.Second

// checkOptions tune a check (tests).
type checkOptions struct {
	noData bool          // do not look for data objects (their store is not at hand)
	settle time.Duration // pause before the second look; < 0: no second look
	// firstLook, if set, is told what the first walk found when there is
	// a second look.
	firstLook func(found []Problem)
}

// CheckVolumes checks the maps of the volumes named (nil: every volume)
// and reports every violation it finds (see the Problem… kinds); it
// never writes. It runs on a live system: nothing is locked, and what a
// concurrent change can make a walk see (a page deleted by a trim or a
// remove under a header read before, a copy caught between the two
// writes of an update, a data write not done yet, a header seen before
// and another after a snapshot or a rename) is not reported: whatever the
// first walk finds is looked at again after a pause, by walking the
// volumes involved once more from their headers read anew, and only what
// both walks find is reported. A volume that disappears (removed, or
// renamed away) during the check is skipped. A volume named that does not
// exist is an error (ErrNotFound), as is a failure to read storage; a
// problem is not an error.
//
// Objects a volume shares are checked against the other volumes checked
// and the current owners of the names its objects are named after: a
// check of every volume checks all sharing, one of some volumes may miss
// an object another volume owns and they reach.
//
// progress, if not nil, is called after each volume of the first walk.
func (e *Engine) CheckVolumes(ctx context.Context, names []string, progress func(done, total int)) (*CheckReport, error) {
	return e.checkVolumes(ctx, names, progress, checkOptions{settle: checkSettle})
}

func (e *Engine) checkVolumes(ctx context.Context, names []string, progress func(done, total int), o checkOptions) (*CheckReport, error) {
	explicit := names != nil
	if !explicit {
		var err error
		if names, err = e.listVolumes(ctx); err != nil {
			return nil, err
		}
	}
	for _, n := range names {
		if err := ValidName(n); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
	}
	first, err := e.checkPass(ctx, names, explicit, progress, o)
	if err != nil {
		return nil, err
	}
	rep := first.report()
	if len(rep.Problems) == 0 && first.omittedN == 0 || o.settle < 0 {
		return rep, nil
	}
	// The second look: the volumes involved, walked again from their
	// headers read anew, a pause after the last problem was found.
	if o.firstLook != nil {
		o.firstLook(first.all())
	}
	if err := sleep(ctx, o.settle-time.Since(first.lastFound)); err != nil {
		return nil, err
	}
	again := make(map[string]bool)
	for _, vs := range first.involved {
		for _, v := range vs {
			again[v] = true
		}
	}
	second, err := e.checkPass(ctx, slices.Sorted(maps.Keys(again)), false, nil, o)
	if err != nil {
		return nil, err
	}
	if err := e.recheckMissing(ctx, second, o); err != nil {
		return nil, err
	}
	confirmed := &checkPassResult{kinds: make(map[[2]string]int)}
	for _, p := range second.all() {
		if first.has(p) {
			confirmed.add(p, nil)
		}
	}
	for k, n := range second.omitted {
		if first.kinds[k] > 0 {
			confirmed.omittedN += n
		}
	}
	out := confirmed.report()
	out.Volumes, out.Pages, out.DataObjects = rep.Volumes, rep.Pages, rep.DataObjects
	return out, nil
}

// recheckMissing looks once more, after another pause, for the missing
// data objects of the second walk that a volume may be writing now (its
// allocation identity's): a first write of a zero block updates the map
// before it writes the data.
func (e *Engine) recheckMissing(ctx context.Context, r *checkPassResult, o checkOptions) error {
	var late []Problem
	for _, p := range r.list {
		if p.Kind == ProblemMissingData && r.current[p.Object] {
			late = append(late, p)
		}
	}
	if len(late) == 0 {
		return nil
	}
	if err := sleep(ctx, o.settle); err != nil {
		return err
	}
	for _, p := range late {
		if _, err := e.data.Stat(ctx, p.Object); err == nil {
			r.drop(p)
		} else if !errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("check: data object %q: %w", p.Object, err)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// listVolumes lists the names of the maps store that may be volumes
// (their headers are read by the walk).
func (e *Engine) listVolumes(ctx context.Context) ([]string, error) {
	var names []string
	err := e.maps.List(ctx, "", func(obj string) error {
		if ValidName(obj) == nil {
			names = append(names, obj)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check: list volumes: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// Check walks every live volume's map straight from the maps store (no
// lock taken, nothing cached) once, without looking for data objects (it
// has no data store), and returns the first problem CheckVolumes would
// list as an error wrapping errs.ErrCorrupt, naming the volume and the
// object (or the error that stopped the walk). A damaged copy of a map
// object is not an error here: the object still reads its state (a crash
// between the two writes of an update leaves one).
//
// The tests run it while no map changes: with a single walk, a volume
// removed or renamed during it may be reported.
func Check(ctx context.Context, maps store.Store) error {
	e, err := New(maps, maps, Options{Owner: "invariant-checker"})
	if err != nil {
		return err
	}
	names, err := e.listVolumes(ctx)
	if err != nil {
		return err
	}
	return e.checkFirst(ctx, names, false)
}

// check is Check of the volumes named (a list of a shared directory or a
// RADOS pool can cost far more than the walk); a volume missing is an
// error.
func (e *Engine) check(ctx context.Context, names []string) error {
	return e.checkFirst(ctx, names, true)
}

func (e *Engine) checkFirst(ctx context.Context, names []string, explicit bool) error {
	r, err := e.checkPass(ctx, names, explicit, nil, checkOptions{noData: true, settle: -1})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	for _, p := range r.report().Problems {
		if p.Kind != ProblemDamagedCopy {
			return fmt.Errorf("check: %s: %w", p, errs.ErrCorrupt)
		}
	}
	return nil
}

// problemKey identifies a problem across the two walks; a damaged copy
// must also be the same (same copy, same sequence number: an object
// being updated shows another state each time).
type problemKey struct {
	volume, object, kind, detail string
}

func keyOf(p Problem) problemKey {
	k := problemKey{volume: p.Volume, object: p.Object, kind: p.Kind}
	if p.Kind == ProblemDamagedCopy {
		k.detail = p.Detail
	}
	return k
}

// checkPassResult is what one walk found.
type checkPassResult struct {
	volumes, pages, datas int
	list                  []Problem
	seen                  map[problemKey]bool
	// involved: the volumes each problem found depends on (walked again
	// before it is reported).
	involved map[problemKey][]string
	kinds    map[[2]string]int // (volume, kind) -> problems found
	omitted  map[[2]string]int // beyond the listed
	omittedN int
	// lastFound: when the last problem was found.
	lastFound time.Time
	// current: data objects named with their volume's allocation
	// identity (a first write may be writing them now).
	current map[string]bool
}

func (r *checkPassResult) add(p Problem, involved []string) {
	if r.seen == nil {
		r.seen = make(map[problemKey]bool)
		r.involved = make(map[problemKey][]string)
	}
	k := keyOf(p)
	if r.seen[k] {
		return
	}
	r.seen[k] = true
	r.involved[k] = involved
	r.lastFound = time.Now()
	vk := [2]string{p.Volume, p.Kind}
	r.kinds[vk]++
	if r.kinds[vk] > maxListedProblems {
		if r.omitted == nil {
			r.omitted = make(map[[2]string]int)
		}
		r.omitted[vk]++
		r.omittedN++
		return
	}
	r.list = append(r.list, p)
}

func (r *checkPassResult) has(p Problem) bool { return r.seen[keyOf(p)] }

func (r *checkPassResult) drop(p Problem) {
	k := keyOf(p)
	r.list = slices.DeleteFunc(r.list, func(q Problem) bool { return keyOf(q) == k })
	delete(r.seen, k)
}

func (r *checkPassResult) all() []Problem { return r.list }

func (r *checkPassResult) report() *CheckReport {
	ps := slices.Clone(r.list)
	if ps == nil {
		ps = []Problem{}
	}
	slices.SortFunc(ps, func(a, b Problem) int {
		return cmpStrings(a.Volume, b.Volume, a.Object, b.Object, a.Kind, b.Kind, a.Detail, b.Detail)
	})
	return &CheckReport{Volumes: r.volumes, Pages: r.pages, DataObjects: r.datas, Problems: ps, Omitted: r.omittedN}
}

func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

// ownerSpan is a span of a volume's header, for finding the owners of an
// object by its name.
type ownerSpan struct {
	from, to uint64
	vol      string
}

// used is the highest epoch found in use under a name.
type used struct {
	epoch uint64
	vol   string // the volume where it was found (the first by name)
	what  string // what uses it
}

// checker is one walk.
type checker struct {
	e        *Engine
	o        checkOptions
	r        *checkPassResult
	hdrs     map[string]*header
	ids      map[[16]byte]string    // header id -> volume walked
	owners   map[string][]ownerSpan // prefix name -> spans owning its objects
	ownersOf map[string]bool        // names whose headers were read for owners
	used     map[string]used        // prefix name -> highest epoch in use
	pages    map[string]bool        // pages counted
	stat     map[string]bool        // data object -> exists
}

func (e *Engine) checkPass(ctx context.Context, names []string, explicit bool, progress func(done, total int), o checkOptions) (*checkPassResult, error) {
	c := &checker{e: e, o: o, r: &checkPassResult{kinds: make(map[[2]string]int), current: make(map[string]bool)},
		hdrs: make(map[string]*header), ids: make(map[[16]byte]string), owners: make(map[string][]ownerSpan),
		ownersOf: make(map[string]bool), used: make(map[string]used), pages: make(map[string]bool), stat: make(map[string]bool)}
	// The headers first: every volume's spans say which objects it owns.
	var walk []string
	for _, n := range names {
		h, err := c.header(ctx, n)
		if err != nil {
			return nil, err
		}
		if h == nil {
			if explicit {
				return nil, notFound(n)
			}
			continue
		}
		if other, ok := c.ids[h.id]; ok && renamePair(c.hdrs[other], other, h, n) {
			continue // one volume seen before and after its rename
		}
		c.ids[h.id] = n
		c.hdrs[n] = h
		c.addOwner(n, h)
		walk = append(walk, n)
	}
	for i, n := range walk {
		if err := c.volume(ctx, n, c.hdrs[n]); err != nil {
			return nil, err
		}
		c.r.volumes++
		if progress != nil {
			progress(i+1, len(walk))
		}
	}
	if err := c.epochs(ctx); err != nil {
		return nil, err
	}
	return c.r, nil
}

// renamePair tells whether headers a (of volume an) and b (of bn), with
// the same id, are one volume read before and after a rename of an to
// bn (or the other way round) finished.
func renamePair(a *header, an string, b *header, bn string) bool {
	return a != nil && (a.flags&flagRenaming != 0 && a.link == bn || b.flags&flagRenaming != 0 && b.link == an)
}

func (c *checker) problem(vol, obj, kind, detail string, involved ...string) {
	c.r.add(Problem{Volume: vol, Object: obj, Kind: kind, Detail: detail}, append([]string{vol}, involved...))
}

// inspect reads the dual-slot object name as stored (no cache, no log).
func (e *Engine) inspect(ctx context.Context, k kind, name string) (object, error) {
	b := make([]byte, 2*k.slot)
	if _, err := e.maps.ReadAt(ctx, name, b, 0); err != nil {
		return object{}, err
	}
	return decodeObject(k, b)
}

// unreadable tells whether err says the object's contents are bad (a
// problem) rather than that storage could not be read (the check fails).
func unreadable(err error) bool {
	return errors.Is(err, errs.ErrCorrupt) || errors.Is(err, errs.ErrVersion)
}

// damaged reports the damaged copies of object name, read as o.
func (c *checker) damaged(vol, name string, k kind, o object) {
	for i, what := range o.damage {
		if what != "" {
			c.problem(vol, name, ProblemDamagedCopy, fmt.Sprintf("%s copy %d %s; copy %d (sequence number %d) is read",
				k.what, i, what, 1-i, o.seq))
		}
	}
}

// header reads volume name's header for the check: nil if no volume of
// that name is visible (absent, uncommitted, or the new name of a rename
// that has not finished) or if it cannot be read (a problem).
func (c *checker) header(ctx context.Context, name string) (*header, error) {
	o, err := c.e.inspect(ctx, kindHeader, name)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return nil, nil
	case unreadable(err):
		c.problem(name, name, ProblemUnreadable, err.Error())
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("check: volume %q: header: %w", name, err)
	}
	h, err := decodeHeader(o.payload)
	if err != nil {
		c.problem(name, name, ProblemUnreadable, err.Error())
		return nil, nil
	}
	if h.flags&flagPending != 0 {
		old, err := c.e.inspect(ctx, kindHeader, h.link)
		switch {
		case errors.Is(err, errs.ErrNotFound):
		case err != nil:
			if !unreadable(err) {
				return nil, fmt.Errorf("check: volume %q: renamed from %q: %w", name, h.link, err)
			}
			return nil, nil // the old name is reported when it is checked
		default:
			if oh, err := decodeHeader(old.payload); err != nil || oh.id == h.id {
				return nil, nil // not a volume while the old one is there
			}
		}
	}
	c.damaged(name, name, kindHeader, o)
	return h, nil
}

// addOwner records the spans of header h of volume vol.
func (c *checker) addOwner(vol string, h *header) {
	if h.snapshot() {
		return
	}
	for _, s := range h.spans {
		p := h.prefixes[s.prefix]
		c.owners[p] = append(c.owners[p], ownerSpan{from: s.from, to: s.to, vol: vol})
	}
}

// owning returns the volumes that own the object of name prefix p and
// epoch ep: among those checked, and the volume now called p, whose
// header is read for this once.
func (c *checker) owning(ctx context.Context, p string, ep uint64) ([]string, error) {
	if c.hdrs[p] == nil && !c.ownersOf[p] {
		c.ownersOf[p] = true
		o, err := c.e.inspect(ctx, kindHeader, p)
		switch {
		case err == nil:
			// Not a volume checked (or another incarnation of one): only
			// its spans are of use; its problems are its own check's.
			if h, err := decodeHeader(o.payload); err == nil && h.flags&flagPending == 0 {
				if _, seen := c.ids[h.id]; !seen {
					c.addOwner(p, h)
				}
			}
		case !errors.Is(err, errs.ErrNotFound) && !unreadable(err):
			return nil, fmt.Errorf("check: volume %q: header: %w", p, err)
		}
	}
	var vs []string
	for _, s := range c.owners[p] {
		if s.from <= ep && ep <= s.to && !slices.Contains(vs, s.vol) {
			vs = append(vs, s.vol)
		}
	}
	return vs, nil
}

// use notes that epoch ep of name p is in use (by what, in vol). Of the
// volumes that use the highest epoch, the first by name is kept, so that
// a walk of some of them (the second look) names the same one.
func (c *checker) use(p string, ep uint64, vol, what string) {
	if u, ok := c.used[p]; !ok || ep > u.epoch || ep == u.epoch && vol < u.vol {
		c.used[p] = used{epoch: ep, vol: vol, what: what}
	}
}

// count tells whether name is new in set, adding it while there is room.
func count(set map[string]bool, name string) bool {
	if set[name] {
		return false
	}
	if len(set) < maxSeen {
		set[name] = true
	}
	return true
}

// owner checks the ownership of object obj (named with r) that volume
// vol (header h) reaches from page parent ("" for the root).
func (c *checker) owner(ctx context.Context, vol string, h *header, obj string, r ref, parent string, parentOwned, page bool) error {
	p := h.prefixes[r.prefix]
	c.use(p, r.epoch, vol, "object "+obj)
	mine := h.owned(r)
	if page && mine && parent != "" && !parentOwned {
		c.problem(vol, obj, ProblemOwnedBelowShared, fmt.Sprintf("the volume owns (writes in place) this page below the page %s, which it does not own", parent))
	}
	owners, err := c.owning(ctx, p, r.epoch)
	if err != nil {
		return err
	}
	others := slices.DeleteFunc(owners, func(o string) bool { return o == vol })
	switch {
	case len(others) == 0:
	case mine:
		c.problem(vol, obj, ProblemOwnedTwice, fmt.Sprintf("owned (written in place) by this volume and by %s", quoteAll(others)), others...)
	default:
		c.problem(vol, obj, ProblemOwnedShared, fmt.Sprintf("reached by this volume and owned (written in place) by %s", quoteAll(others)), others...)
	}
	return nil
}

func quoteAll(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("volume %q", v)
	}
	return strings.Join(q, " and ")
}

// dataRef is a mapped data object to look for.
type dataRef struct {
	name, page string
	block      uint64
	current    bool // named with the volume's allocation identity
}

// volume walks the map of volume vol (header h).
func (c *checker) volume(ctx context.Context, vol string, h *header) error {
	for _, s := range h.spans {
		c.use(h.prefixes[s.prefix], s.to, vol, fmt.Sprintf("a span of the header of volume %q", vol))
	}
	if !h.root.present {
		return nil
	}
	var datas []dataRef
	var rec func(key pageKey, r ref, parent string, parentOwned bool) error
	rec = func(key pageKey, r ref, parent string, parentOwned bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		pn := pageObject(h.prefixes[r.prefix], r.epoch, key)
		if err := c.owner(ctx, vol, h, pn, r, parent, parentOwned, true); err != nil {
			return err
		}
		p, err := c.page(ctx, vol, pn, key, parent)
		if p == nil {
			return err
		}
		owned := h.owned(r)
		for i, ent := range p.e {
			if !ent.present {
				continue
			}
			lo := key.index<<fanoutBits + uint64(i)
			if ent.prefix >= uint32(len(h.prefixes)) {
				c.problem(vol, pn, ProblemBadPrefix, fmt.Sprintf("entry %d names prefix %d of a table of %d", i, ent.prefix, len(h.prefixes)))
				continue
			}
			if key.level > 0 {
				if err := rec(pageKey{key.level - 1, lo}, ent.ref, pn, owned); err != nil {
					return err
				}
				continue
			}
			if lo >= h.nblocks() {
				c.problem(vol, pn, ProblemBeyondSize, fmt.Sprintf("entry %d maps block %d, beyond the volume's %d blocks", i, lo, h.nblocks()))
				continue
			}
			dn := DataObject(h.prefixes[ent.prefix], ent.epoch, lo)
			if err := c.owner(ctx, vol, h, dn, ent.ref, pn, owned, false); err != nil {
				return err
			}
			if count(c.stat, dn) {
				c.r.datas++
				datas = append(datas, dataRef{name: dn, page: pn, block: lo, current: !h.snapshot() && ent.ref == h.alloc()})
			} else if !c.o.noData && !c.stat[dn] {
				// Another volume found it missing: missing here too.
				datas = append(datas, dataRef{name: dn, page: pn, block: lo})
			}
		}
		return nil
	}
	if err := rec(pageKey{h.height() - 1, 0}, h.root.ref, "", false); err != nil {
		return err
	}
	return c.data(ctx, vol, datas)
}

// page reads the page pn at key for the walk of vol: nil if it cannot be
// read (a problem, unless err says why the check cannot go on).
func (c *checker) page(ctx context.Context, vol, pn string, key pageKey, parent string) (*page, error) {
	from := "the page " + parent
	if parent == "" {
		from = "the header"
	}
	o, err := c.e.inspect(ctx, kindPage, pn)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		what := "does not exist"
		if n, err := c.e.maps.Stat(ctx, pn); err == nil {
			what = fmt.Sprintf("holds no copy (%d bytes)", n)
		}
		c.problem(vol, pn, ProblemDangling, fmt.Sprintf("map page named by %s %s", from, what))
		return nil, nil
	case unreadable(err):
		c.problem(vol, pn, ProblemUnreadable, fmt.Sprintf("named by %s: %v", from, err))
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("check: volume %q: map page %q: %w", vol, pn, err)
	}
	p, err := decodePage(o.payload, key)
	if err != nil {
		c.problem(vol, pn, ProblemUnreadable, fmt.Sprintf("named by %s: %v", from, err))
		return nil, nil
	}
	if count(c.pages, pn) {
		c.r.pages++
	}
	c.damaged(vol, pn, kindPage, o)
	return p, nil
}

// data looks for the data objects of ds (mapped by vol), a few at once.
func (c *checker) data(ctx context.Context, vol string, ds []dataRef) error {
	if c.o.noData || len(ds) == 0 {
		return nil
	}
	missing := make([]bool, len(ds))
	err := inParallel(ctx, len(ds), statWorkers, func(i int) error {
		_, err := c.e.data.Stat(ctx, ds[i].name)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			missing[i] = true
		case err != nil:
			return fmt.Errorf("check: volume %q: data object %q: %w", vol, ds[i].name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, d := range ds {
		if !missing[i] {
			continue
		}
		if _, ok := c.stat[d.name]; ok {
			c.stat[d.name] = false
		}
		if d.current {
			c.r.current[d.name] = true
		}
		c.problem(vol, d.name, ProblemMissingData, fmt.Sprintf(
			"block %d (entry of the page %s) names a data object that does not exist: it reads as zeros (data lost, or a first write cut by a crash)",
			d.block, d.page))
	}
	return nil
}

// epochs checks the epoch record of every name in use.
func (c *checker) epochs(ctx context.Context) error {
	for _, p := range slices.Sorted(maps.Keys(c.used)) {
		u := c.used[p]
		rec := epochName(p)
		o, err := c.e.inspect(ctx, kindEpoch, rec)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			c.problem(u.vol, rec, ProblemEpochMissing, fmt.Sprintf("no epoch record for the name %q, whose epoch %d is in use (%s)", p, u.epoch, u.what))
			continue
		case unreadable(err):
			c.problem(u.vol, rec, ProblemUnreadable, fmt.Sprintf("epoch record: %v", err))
			continue
		case err != nil:
			return fmt.Errorf("check: epoch record %q: %w", rec, err)
		}
		ep, err := decodeEpoch(o.payload)
		if err != nil {
			c.problem(u.vol, rec, ProblemUnreadable, err.Error())
			continue
		}
		c.damaged(u.vol, rec, kindEpoch, o)
		if ep < u.epoch {
			c.problem(u.vol, rec, ProblemEpochBehind, fmt.Sprintf("the record of the name %q is at epoch %d, but epoch %d is in use (%s)", p, ep, u.epoch, u.what))
		}
	}
	return nil
}
