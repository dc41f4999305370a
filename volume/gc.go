package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// GCOptions shape one collection.
type GCOptions struct {
	DryRun   bool             // find and count, delete nothing
	Force    bool             // break another host's collector lock (its host is gone)
	Progress func(GCProgress) // called now and then (may be nil)

	// hook, for tests, is called between the steps with the step done
	// ("listed", "records", "volumes", "walked <name>", "marked",
	// "markers", "settled", "swept", "unmarking <name>"), and with
	// "walking <name>" between the read of a header and its walk.
	hook func(step string)
}

// GCProgress is where a collection is.
type GCProgress struct {
	Phase      string `json:"phase"`      // "listing", "records", "marking", "markers", "sweeping", "done"
	Listed     int    `json:"listed"`     // objects listed (candidates so far)
	Volumes    int    `json:"volumes"`    // headers walked
	Reachable  int    `json:"reachable"`  // objects marked
	Candidates int    `json:"candidates"` // unreached, to delete (known from sweeping on)
	Deleted    int    `json:"deleted"`
	Bytes      int64  `json:"bytes"` // of what was deleted
}

// GCReport is what a collection found and did.
type GCReport struct {
	DryRun         bool     `json:"dry_run"`
	Listed         int      `json:"listed"`  // map pages and data objects listed
	Volumes        int      `json:"volumes"` // headers walked (markers included)
	Reachable      int      `json:"reachable"`
	Protected      int      `json:"protected"` // unreached but kept: an operation in flight may link them
	Deleted        int      `json:"deleted"`   // (dry run: would be deleted)
	DeletedPages   int      `json:"deleted_pages"`
	DeletedData    int      `json:"deleted_data"`
	Bytes          int64    `json:"bytes"`             // bytes of what was (would be) deleted
	Objects        []string `json:"objects,omitempty"` // dry run: the objects it would delete
	Markers        int      `json:"markers"`           // root markers processed; MarkersDeleted of them removed
	MarkersDeleted int      `json:"markers_deleted"`
	Rounds         int      `json:"rounds"`
	Problems       []string `json:"problems,omitempty"` // e.g. objects of a prefix with no epoch record (kept)
}

// gcMaxRounds bounds the listings of root markers: volumes that keep
// getting new roots (snapshots, clones, renames) faster than the
// collector walks them make it give up the sweep.
const gcMaxRounds = 20

// gcRun is one collection's state.
type gcRun struct {
	e   *Engine
	o   GCOptions
	rep *GCReport
	// cands: the objects listed in step 1 (T1), by name.
	cands map[string]objectName
	// rec: the epoch record of each candidate prefix, read after T1 and
	// before the volumes are listed; noRec: prefixes with none (or one
	// that cannot be read), and why.
	rec   map[string]uint64
	noRec map[string]string
	// busy: prefixes whose name's lock was held when looked at, after
	// the record was read: an operation may be writing objects of the
	// record's epoch that no header names yet.
	busy map[string]bool
	// marked: every object a completed walk reached.
	marked map[string]bool
	// ident: the allocation identity (prefix, epoch) of every writable
	// header walked.
	ident map[string]map[uint64]bool
	// keep: prefixes whose objects are all kept (a header whose map could
	// not be walked whole names them in its prefix table).
	keep map[string]bool
	// doomed: the candidates the sweep deletes (from sweeping on).
	doomed int
}

// GC collects garbage (docs/gc.md): the map pages and data objects that
// no header reaches and that no operation in flight may still link.
// Objects of removed volumes and snapshots, orphans of crashed sessions
// and failed operations, and what a forced unlock took from its old
// holder are deleted; headers, epoch records, locks and anything else are
// never touched. It runs online, while this host and others write,
// snapshot, clone, rename, resize and remove volumes.
//
// One collection runs at a time in a pool: it holds the collector's lock
// (held by another host: errs.ErrLocked naming it; o.Force breaks it, for
// a host that is gone). On an error the report says what was done so far.
func (e *Engine) GC(ctx context.Context, o GCOptions) (*GCReport, error) {
	rep, err := e.gc(ctx, o)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	return rep, nil
}

func (e *Engine) gc(ctx context.Context, o GCOptions) (rep *GCReport, err error) {
	rep = &GCReport{DryRun: o.DryRun}
	// Step 0: the in-process mutex (the store's lock is re-entrant for
	// this owner) and the pool-wide lock, with an intent so that a mapperd
	// killed during the collection gives the lock back when it starts
	// again (RecoverIntents, which waits for this gate).
	gv := e.vol(gcLockName)
	if !gv.gate.TryLock() {
		return rep, fmt.Errorf("garbage collection running on host %s (this host): %w", e.owner, errs.ErrLocked)
	}
	defer gv.gate.Unlock()
	if err := e.gcLock(ctx, o.Force); err != nil {
		return rep, err
	}
	defer func() {
		// Given back also after a failure: nothing the collection did is
		// half-done for the next one (it starts over from a listing).
		uerr := e.locker.Unlock(context.WithoutCancel(ctx), lockName(gcLockName), e.owner, false)
		if uerr != nil && !errors.Is(uerr, errs.ErrNotFound) && !errors.Is(uerr, errs.ErrNotOwner) {
			if err == nil {
				err = fmt.Errorf("give back the collector's lock: %w", uerr)
			}
			return // the intent stays: the next start gives it back
		}
		e.endIntent(gcLockName)
	}()
	g := &gcRun{e: e, o: o, rep: rep,
		cands: make(map[string]objectName), rec: make(map[string]uint64), noRec: make(map[string]string),
		busy:   make(map[string]bool),
		marked: make(map[string]bool), ident: make(map[string]map[uint64]bool),
		keep: make(map[string]bool)}
	return rep, g.run(ctx)
}

// gcLock takes the collector's lock (step 0).
func (e *Engine) gcLock(ctx context.Context, force bool) error {
	ln := lockName(gcLockName)
	if e.intents != nil {
		if err := e.intents.Begin(gcLockName); err != nil {
			return fmt.Errorf("record the collector lock's intent: %w", err)
		}
	}
	err := e.locker.TryLock(ctx, ln, e.owner)
	var le *store.LockedError
	if errors.As(err, &le) && force {
		if uerr := e.locker.Unlock(ctx, ln, e.owner, true); uerr != nil && !errors.Is(uerr, errs.ErrNotFound) {
			e.endIntent(gcLockName)
			return fmt.Errorf("break the collector's lock held by host %s: %w", le.Owner, uerr)
		}
		e.dmg.log().Warn("broke the garbage collector's lock", "host", le.Owner)
		err = e.locker.TryLock(ctx, ln, e.owner)
	}
	if err == nil {
		return nil
	}
	e.endIntent(gcLockName)
	if errors.As(err, &le) {
		return fmt.Errorf("garbage collection running on host %s (force breaks its lock if that host is gone): %w", le.Owner, err)
	}
	return fmt.Errorf("collector's lock: %w", err)
}

// stillOurs checks that the collector's lock was not broken meanwhile
// (another host's GC with force): two collections at once could delete
// root markers one of them still needs.
func (e *Engine) gcStillOurs(ctx context.Context) error {
	owner, err := e.locker.LockOwner(ctx, lockName(gcLockName))
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return fmt.Errorf("the collector's lock was broken meanwhile (nobody holds it): nothing more deleted: %w", errs.ErrNotOwner)
	case err != nil:
		return fmt.Errorf("who holds the collector's lock: %w", err)
	case owner != e.owner:
		return fmt.Errorf("the collector's lock was broken meanwhile by host %s: nothing more deleted: %w", owner, errs.ErrNotOwner)
	}
	return nil
}

func (g *gcRun) progress(phase string) {
	if g.o.Progress == nil {
		return
	}
	r := g.rep
	g.o.Progress(GCProgress{Phase: phase, Listed: len(g.cands), Volumes: r.Volumes, Reachable: len(g.marked),
		Candidates: g.doomed, Deleted: r.Deleted, Bytes: r.Bytes})
}

// hook calls the test hook between steps.
func (g *gcRun) hook(step string) {
	if g.o.hook != nil {
		g.o.hook(step)
	}
}

func (g *gcRun) problem(format string, args ...any) {
	g.rep.Problems = append(g.rep.Problems, fmt.Sprintf(format, args...))
}

func (g *gcRun) run(ctx context.Context) error {
	e := g.e
	// Step 1 (T1): the candidates. Only objects listed now can be
	// deleted; anything created later is safe by construction.
	g.progress("listing")
	if err := g.list(ctx); err != nil {
		return err
	}
	g.rep.Listed = len(g.cands)
	g.hook("listed")
	// Step 2: the epoch records of the candidates' prefixes, after T1 and
	// before the volumes are listed.
	g.progress("records")
	if err := g.records(ctx); err != nil {
		return err
	}
	g.hook("records")
	// Step 3: mark what every header reaches.
	g.progress("marking")
	var names []string
	if err := e.List(ctx, func(n string) error { names = append(names, n); return nil }); err != nil {
		return err
	}
	g.hook("volumes")
	for _, n := range names {
		if err := g.walk(ctx, n); err != nil {
			return err
		}
		g.hook("walked " + n)
		g.progress("marking")
	}
	g.hook("marked")
	// Step 4: the roots made during the mark, by their markers, until a
	// listing finds none not processed yet.
	g.progress("markers")
	processed := make(map[string]bool)
	var order []string
	settled := false
	for round := 1; round <= gcMaxRounds; round++ {
		g.rep.Rounds = round
		var fresh []string
		err := e.maps.List(ctx, rootMarkerPrefix, func(obj string) error {
			if n, ok := strings.CutPrefix(obj, rootMarkerPrefix); ok && !processed[n] && ValidName(n) == nil {
				fresh = append(fresh, n)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list root markers: %w", err)
		}
		g.hook("markers")
		if len(fresh) == 0 {
			settled = true
			break
		}
		slices.Sort(fresh)
		for _, n := range fresh {
			processed[n] = true
			order = append(order, n)
			// Walked again even if step 3 walked the name: that may have
			// been another incarnation of it.
			if err := g.walk(ctx, n); err != nil {
				return err
			}
			g.progress("markers")
		}
	}
	g.rep.Markers = len(order)
	if !settled {
		return fmt.Errorf("volumes kept changing (%d listings of root markers found new ones): nothing deleted: %w",
			gcMaxRounds, errs.ErrBusy)
	}
	g.hook("settled")
	// Step 5: sweep.
	if err := g.sweep(ctx); err != nil {
		return err
	}
	g.hook("swept")
	// Step 6: the markers whose operation is over.
	if !g.o.DryRun {
		if err := g.dropMarkers(ctx, order); err != nil {
			return err
		}
	}
	g.progress("done")
	return nil
}

// list is step 1: the data objects of the data store and the map pages of
// the maps store (maps and data may be one store: each form is taken from
// its own store only).
func (g *gcRun) list(ctx context.Context) error {
	e := g.e
	take := func(page bool) func(string) error {
		return func(obj string) error {
			if on, ok := parseObjectName(obj); ok && on.page == page {
				g.cands[obj] = on
				if len(g.cands)%4096 == 0 {
					g.progress("listing")
				}
			}
			return nil
		}
	}
	if e.data == e.maps { // one store: one listing
		err := e.maps.List(ctx, "", func(obj string) error {
			if on, ok := parseObjectName(obj); ok {
				return take(on.page)(obj)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list the store: %w", err)
		}
		return nil
	}
	if err := e.data.List(ctx, "", take(false)); err != nil {
		return fmt.Errorf("list the data store: %w", err)
	}
	if err := e.maps.List(ctx, "", take(true)); err != nil {
		return fmt.Errorf("list the maps store: %w", err)
	}
	return nil
}

// records is step 2: the epoch record of every candidate prefix, and
// whether the name's lock is held.
func (g *gcRun) records(ctx context.Context) error {
	for _, on := range g.cands {
		p := on.prefix
		if _, ok := g.rec[p]; ok {
			continue
		}
		if _, ok := g.noRec[p]; ok {
			continue
		}
		ep, err := g.e.readEpoch(ctx, p)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			g.noRec[p] = "has no epoch record " + epochName(p)
		case errors.Is(err, errs.ErrCorrupt):
			g.noRec[p] = err.Error()
		case err != nil:
			return err
		default:
			g.rec[p] = ep
		}
		// An epoch is handed out under the name's lock, which is kept
		// until the header that uses it is written: a lock free now
		// means that every epoch up to the record read is in a header
		// (listed in step 3) or was given up.
		switch _, err := g.e.locker.LockOwner(ctx, lockName(p)); {
		case errors.Is(err, errs.ErrNotFound):
		case err != nil && ctx.Err() != nil:
			return err
		default: // held, or unknown: kept as if held
			g.busy[p] = true
		}
	}
	return nil
}

// readEpoch reads the epoch record of name.
func (e *Engine) readEpoch(ctx context.Context, name string) (uint64, error) {
	rec := epochName(name)
	o, err := e.readObject(ctx, kindEpoch, rec)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return 0, fmt.Errorf("epoch record %q: %w", rec, errs.ErrNotFound)
		}
		return 0, fmt.Errorf("epoch record %q: %w", rec, err)
	}
	ep, err := decodeEpoch(o.payload)
	if err != nil {
		return 0, fmt.Errorf("epoch record %q: %w", rec, err)
	}
	return ep, nil
}

// walk marks what header name reaches (and the header its rename links
// to), and notes its allocation identity. A name that does not exist is
// fine. A walk that fails while the header changes under it (pages of a
// trim or remove deleted) starts again from the new header; one that
// fails on a header that stays the same (a page unreadable) keeps every
// object named after a prefix the header knows, and says so.
func (g *gcRun) walk(ctx context.Context, name string) error {
	seen := map[string]bool{}
	for n := name; n != "" && !seen[n]; {
		seen[n] = true
		h, err := g.walkOne(ctx, n)
		if err != nil || h == nil || h.flags&(flagPending|flagRenaming) == 0 {
			return err
		}
		n = h.link
	}
	return nil
}

func (g *gcRun) walkOne(ctx context.Context, name string) (*header, error) {
	e := g.e
	for attempt := 1; ; attempt++ {
		h, err := e.readHeaderRaw(ctx, name)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			return nil, nil
		case err != nil:
			// Nothing tells what an unreadable header reaches.
			return nil, fmt.Errorf("%w: nothing deleted (repair or remove the volume)", err)
		}
		g.hook("walking " + name)
		local := make(map[string]bool)
		werr := e.reachPrivate(ctx, name, h, func(o reached) error {
			if o.page && !o.owned && g.marked[o.name] {
				return errSkip // a shared page's subtree, walked whole already
			}
			local[o.name] = true
			return nil
		})
		if werr != nil && ctx.Err() != nil {
			return nil, werr
		}
		if werr != nil {
			h2, err := e.readHeaderRaw(ctx, name)
			// A trim or shrink deletes owned pages after it commits,
			// and may change no header: a walk that read the page above
			// before fails below; so a failure is retried a few times
			// even on an unchanged header, more while it changes.
			changed := err != nil || h2.id != h.id || h2.seq != h.seq
			if attempt < 3 || changed && attempt < 10 {
				continue
			}
			g.problem("volume %q: map not walked whole (%v): every object named after %s kept", name, werr, strings.Join(h.prefixes, ", "))
			for _, p := range h.prefixes {
				g.keep[p] = true
			}
		}
		for o := range local {
			g.marked[o] = true
		}
		g.rep.Volumes++
		g.rep.Reachable = len(g.marked)
		if !h.snapshot() {
			a := h.alloc()
			if int(a.prefix) < len(h.prefixes) {
				p := h.prefixes[a.prefix]
				if g.ident[p] == nil {
					g.ident[p] = make(map[uint64]bool)
				}
				g.ident[p][a.epoch] = true
			}
		}
		return h, nil
	}
}

// protected tells why an unmarked candidate is kept ("" if not).
func (g *gcRun) protected(on objectName) (why string, problem bool) {
	switch rec, ok := g.rec[on.prefix]; {
	case g.keep[on.prefix]:
		return "a map naming its prefix could not be walked", true
	case !ok:
		return g.noRec[on.prefix], true
	case on.epoch >= rec && g.busy[on.prefix]:
		return "its epoch is the newest handed out and its name is locked (an operation may be creating it)", false
	case g.ident[on.prefix][on.epoch]:
		return "its epoch is a volume's allocation identity (a write may be linking it)", false
	}
	return "", false
}

// sweep is step 5.
func (g *gcRun) sweep(ctx context.Context) error {
	e := g.e
	rep := g.rep
	names := make([]string, 0, len(g.cands))
	for n := range g.cands {
		if !g.marked[n] {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	kept := make(map[string]int) // prefix with a problem -> objects kept
	var keptOrder []string
	var doomed []string
	for _, n := range names {
		on := g.cands[n]
		why, problem := g.protected(on)
		switch {
		case problem:
			if kept[on.prefix] == 0 && !g.keep[on.prefix] {
				keptOrder = append(keptOrder, on.prefix)
			}
			kept[on.prefix]++
		case why != "":
			rep.Protected++
		default:
			doomed = append(doomed, n)
		}
	}
	for _, p := range keptOrder {
		g.problem("%d object(s) named after %q kept: the name %s", kept[p], p, g.noRec[p])
	}
	g.doomed = len(doomed)
	g.progress("sweeping")
	if !g.o.DryRun {
		if err := e.gcStillOurs(ctx); err != nil {
			return err
		}
	}
	var firstErr error
	failed := 0
	for i, n := range doomed {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("sweep interrupted after %d of %d objects: %w", rep.Deleted, len(doomed), err)
		}
		on := g.cands[n]
		st, kind := e.data, "data object"
		if on.page {
			st, kind = e.maps, "map page"
		}
		size, err := st.Stat(ctx, n)
		if errors.Is(err, errs.ErrNotFound) {
			continue // deleted meanwhile (a remove's own clean-up)
		}
		if err == nil && !g.o.DryRun {
			err = st.Delete(ctx, n)
			if errors.Is(err, errs.ErrNotFound) {
				continue
			}
		}
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("%s %q: %w", kind, n, err)
			}
			continue
		}
		rep.Deleted++
		rep.Bytes += size
		if on.page {
			rep.DeletedPages++
		} else {
			rep.DeletedData++
		}
		if g.o.DryRun {
			rep.Objects = append(rep.Objects, n)
		}
		if i%256 == 255 {
			g.progress("sweeping")
		}
	}
	if !g.o.DryRun && rep.Deleted > 0 {
		if err := e.dataSync.sync(ctx); err != nil {
			return fmt.Errorf("sync the data store after deleting: %w", err)
		}
		if err := e.mapsSync.sync(ctx); err != nil {
			return fmt.Errorf("sync the maps store after deleting: %w", err)
		}
	}
	if firstErr != nil {
		return fmt.Errorf("%d of %d deletes failed, the first: %w", failed, len(doomed), firstErr)
	}
	return nil
}

// dropMarkers is step 6: a marker processed is deleted once no operation
// that made it can be in flight, that is while its name's lock is free or
// this host's with no operation of this host on the name (its gate taken
// shared meanwhile), and its header, if any, carries no rename flag. The
// lock is looked at again after the delete: taken by another host
// meanwhile (an operation starting, whose marker write found the old one),
// the marker is written again. Markers matter only to collections, which
// run one at a time: an operation that ended before this one gives the
// lock back needs none, and one that starts later writes its own.
func (g *gcRun) dropMarkers(ctx context.Context, names []string) error {
	e := g.e
	if len(names) == 0 {
		return nil
	}
	if err := e.gcStillOurs(ctx); err != nil {
		return err
	}
	deleted := 0
	for _, n := range names {
		ok, err := g.dropMarker(ctx, n)
		if err != nil {
			return err
		}
		if ok {
			deleted++
		}
	}
	if deleted > 0 {
		if err := e.mapsSync.sync(ctx); err != nil {
			return fmt.Errorf("sync the maps store after deleting root markers: %w", err)
		}
	}
	g.rep.MarkersDeleted = deleted
	return nil
}

// dropMarker deletes name's root marker if no operation that writes it
// can be in flight (see dropMarkers); ok if it did.
func (g *gcRun) dropMarker(ctx context.Context, name string) (ok bool, err error) {
	e := g.e
	v := e.vol(name)
	if !v.gate.TryRLock() { // an operation of this host on it
		return false, nil
	}
	defer v.gate.RUnlock()
	busy := func() (bool, error) {
		owner, err := e.locker.LockOwner(ctx, lockName(name))
		switch {
		case errors.Is(err, errs.ErrNotFound):
			return false, nil
		case err != nil:
			return true, fmt.Errorf("root marker %q: who holds the lock of %q: %w", rootMarker(name), name, err)
		}
		return owner != e.owner, nil
	}
	if b, err := busy(); b || err != nil {
		return false, nil // kept: looked at again next time
	}
	h, err := e.readHeaderRaw(ctx, name)
	switch {
	case errors.Is(err, errs.ErrNotFound):
	case err != nil:
		return false, nil // kept: looked at again next time
	case h.flags&(flagPending|flagRenaming) != 0:
		return false, nil
	}
	g.hook("unmarking " + name)
	if err := e.maps.Delete(ctx, rootMarker(name)); err != nil && !errors.Is(err, errs.ErrNotFound) {
		return false, fmt.Errorf("delete root marker %q: %w", rootMarker(name), err)
	}
	if b, err := busy(); b || err != nil {
		if merr := e.markRoot(context.WithoutCancel(ctx), name); merr != nil {
			return false, fmt.Errorf("write again the root marker of %q, whose lock was taken while it was deleted: %w", name, merr)
		}
		return false, err
	}
	return true, nil
}
