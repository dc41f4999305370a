package volume

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Limits.
const (
	// MaxSize is the largest volume: 2^60 bytes (1 EiB).
	MaxSize = uint64(1) << 60
	// DefaultBlockSize is the data object size of new volumes.
	DefaultBlockSize = 4 << 20
	// MinBlockSize and MaxBlockSize bound Options.BlockSize.
	MinBlockSize = 4 << 10
	MaxBlockSize = 64 << 20
)

// Options configure New.
type Options struct {
	// Owner is the identity locks are taken with (the host's HOST_ID).
	// Required.
	Owner string
	// BlockSize is the data object size of volumes created from now on:
	// a power of two from MinBlockSize to MaxBlockSize; 0 means
	// DefaultBlockSize. Clones keep their parent's.
	BlockSize uint32
}

// Segment is one piece of a mapped range: Size bytes at Offset of Object.
// A Zero segment has no object and reads as zeros (consecutive zero blocks
// form one segment, with Offset 0). ReadOnly means a write would need
// copy-on-write first (always so for zero segments and snapshots).
type Segment struct {
	Object       string
	Offset, Size uint64
	Zero         bool
	ReadOnly     bool
}

// Extent is a range of a volume, in bytes.
type Extent struct {
	Offset, Size uint64
}

// Info describes a volume.
type Info struct {
	Name      string
	Size      uint64
	BlockSize uint32
	ReadOnly  bool   // a snapshot
	Parent    string // the snapshot a clone came from; the volume a snapshot was taken of
	Epoch     uint64 // the epoch new objects are named with
	LockOwner string // "" if unlocked
}

// Engine owns volume maps. It is safe for concurrent use.
//
// Lock order: Engine.mu is a leaf. Per volume: gate, then commitMu, then
// mu. Two volumes' gates are taken in name order.
type Engine struct {
	maps, data store.Store
	locker     store.Locker
	owner      string
	blockSize  uint32
	dataSync   *syncer
	mapsSync   *syncer

	// Tunables, changed only by tests before use. A waiting MapWrite or
	// Trim retries after pollMin, doubling up to pollMax; when the locker
	// announces releases (store.LockWatcher) it retries on each
	// announcement and its pause grows up to max(pollMax, pollWatchMax).
	pollMin, pollMax, pollWatchMax time.Duration
	// onWait, if set, is called each time MapWrite or Trim finds the lock
	// held by owner and is about to wait.
	onWait   func(name, owner string)
	maxPages int // cached pages per volume

	mu   sync.Mutex
	vols map[string]*vol
}

// vol is the in-process state of one volume name.
type vol struct {
	name string
	// gate: I/O (MapRead, MapWrite, Trim, Allocated, Info) holds it shared;
	// management operations hold it exclusively.
	gate sync.RWMutex
	// commitMu serializes changes of the map (building and writing a txn).
	commitMu sync.Mutex
	// mu guards the fields below; page loads of a held volume happen under it.
	mu sync.Mutex
	// held: we hold the volume's lock, so hdr and pages may be cached.
	held  bool
	hdr   *header // nil: not loaded
	pages map[pageKey]*page
	// session: hdr's allocation epoch was made fresh by this process and no
	// failure or dropped reference has happened since, so names in it are
	// unused unless the map points at them.
	session bool
	// inflight: blocks being made writable; closed when done.
	inflight map[uint64]chan struct{}
}

// New returns an engine over maps (headers, map pages, epoch records; must
// implement store.Locker) and data (data objects).
func New(maps, data store.Store, opts Options) (*Engine, error) {
	locker, ok := maps.(store.Locker)
	if !ok {
		return nil, fmt.Errorf("volume: maps store %T cannot lock: %w", maps, errs.ErrNotSupported)
	}
	if err := store.ValidOwner(opts.Owner); err != nil {
		return nil, fmt.Errorf("volume: owner: %w", err)
	}
	bs := opts.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < MinBlockSize || bs > MaxBlockSize || bits.OnesCount32(bs) != 1 {
		return nil, fmt.Errorf("volume: block size %d is not a power of two from %d to %d: %w",
			bs, MinBlockSize, MaxBlockSize, errs.ErrInvalid)
	}
	return &Engine{
		maps: maps, data: data, locker: locker,
		owner: opts.Owner, blockSize: bs,
		dataSync: &syncer{st: data}, mapsSync: &syncer{st: maps},
		pollMin: time.Millisecond, pollMax: 100 * time.Millisecond, pollWatchMax: 2 * time.Second,
		maxPages: 4096,
		vols:     make(map[string]*vol),
	}, nil
}

// Owner returns the lock owner identity.
func (e *Engine) Owner() string { return e.owner }

func (e *Engine) vol(name string) *vol {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.vols[name]
	if v == nil {
		v = &vol{name: name, pages: make(map[pageKey]*page), inflight: make(map[uint64]chan struct{})}
		e.vols[name] = v
	}
	return v
}

// lockPair takes the gates of two distinct volumes exclusively, in name
// order, and returns the function that releases them.
func lockPair(a, b *vol) func() {
	if a.name > b.name {
		a, b = b, a
	}
	a.gate.Lock()
	b.gate.Lock()
	return func() { b.gate.Unlock(); a.gate.Unlock() }
}

// forget drops the cached map. Caller holds v.mu.
func (v *vol) forget() {
	v.hdr = nil
	v.pages = make(map[pageKey]*page)
	v.session = false
}

// forgetLocked is forget taking v.mu.
func (v *vol) forgetLocked() {
	v.mu.Lock()
	v.forget()
	v.mu.Unlock()
}

// isHeld reports v.held.
// Held reports whether the engine holds volume name's lock (and so may
// cache its map: nobody else changes it).
func (e *Engine) Held(name string) bool {
	e.mu.Lock()
	v := e.vols[name]
	e.mu.Unlock()
	return v != nil && v.isHeld()
}

func (v *vol) isHeld() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.held
}

// lockedErr turns a lock failure into the error of a volume operation.
func lockedErr(op, name string, err error) error {
	var le *store.LockedError
	if errors.As(err, &le) {
		return fmt.Errorf("%s volume %q: locked by %s: %w", op, name, le.Owner, err)
	}
	return fmt.Errorf("%s volume %q: lock: %w", op, name, err)
}

// tryLock takes v's store lock once. It returns whether v was held before
// (then nothing was taken). Caller holds v.gate exclusively.
//
// Management operations are rare, so even when v is held it asks the
// store (the lock is re-entrant for us): another host may have broken the
// lock with force since, and then the cache is dropped and op fails.
func (e *Engine) tryLock(ctx context.Context, op string, v *vol) (was bool, err error) {
	was = v.isHeld()
	if err := e.locker.TryLock(ctx, lockName(v.name), e.owner); err != nil {
		if was {
			v.mu.Lock()
			v.held = false
			v.forget()
			v.mu.Unlock()
		}
		return false, lockedErr(op, v.name, err)
	}
	if was {
		return true, nil
	}
	v.mu.Lock()
	v.held = true
	v.forget()
	v.mu.Unlock()
	return false, nil
}

// release gives up v's lock and cache unless keep. Caller holds v.gate
// exclusively.
func (e *Engine) release(ctx context.Context, v *vol, keep bool) {
	if keep {
		return
	}
	v.mu.Lock()
	held := v.held
	v.held = false
	v.forget()
	v.mu.Unlock()
	if held {
		// A failure leaves the lock held; it is re-entrant for us.
		_ = e.locker.Unlock(context.WithoutCancel(ctx), lockName(v.name), e.owner, false)
	}
}

// tryHold takes v's lock for I/O if it is free or ours: true if v is held
// afterwards. Caller holds v.gate shared.
func (e *Engine) tryHold(ctx context.Context, v *vol) (bool, string, error) {
	if v.isHeld() {
		return true, "", nil
	}
	err := e.locker.TryLock(ctx, lockName(v.name), e.owner)
	var le *store.LockedError
	switch {
	case err == nil:
		v.mu.Lock()
		if !v.held {
			v.held = true
			v.forget()
		}
		v.mu.Unlock()
		return true, "", nil
	case errors.As(err, &le):
		return false, le.Owner, nil
	}
	return false, "", fmt.Errorf("volume %q: lock: %w", v.name, err)
}

// holdWait returns with v.gate held shared and v held, waiting while
// another owner holds the lock. It retries with backoff; if the locker
// announces releases (store.LockWatcher) it subscribes at the first
// failed try, tries once more (a release before the subscription is not
// announced) and then also retries at each announcement, polling only
// slowly, for releases that went unannounced. A wake-up is a hint: the
// lock is taken only by tryHold's own try, never by a request left
// waiting at the store, so a wait that ends with ctx leaves no lock
// behind.
func (e *Engine) holdWait(ctx context.Context, v *vol) error {
	delay, limit := e.pollMin, e.pollMax
	lw, watch := e.locker.(store.LockWatcher)
	var wake <-chan struct{}
	for {
		v.gate.RLock()
		held, owner, err := e.tryHold(ctx, v)
		if held {
			return nil
		}
		v.gate.RUnlock()
		if err != nil {
			return err
		}
		if watch {
			watch = false // once
			if c, cancel, err := lw.WatchLock(ctx, lockName(v.name)); err == nil {
				defer cancel()
				// The timer only covers lost notifications now: no
				// need to start it at a millisecond.
				wake, limit = c, max(limit, e.pollWatchMax)
				delay = max(delay, limit/20)
				continue
			}
			// The locker cannot watch now: poll.
		}
		if e.onWait != nil {
			e.onWait(v.name, owner)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("volume %q: waiting for the lock held by %s: %w", v.name, owner, ctx.Err())
		case <-wake:
			t.Stop()
		case <-t.C:
			delay = min(2*delay, limit)
		}
	}
}

// header returns v's header, loading it into the cache. Caller holds v.mu
// and v.held.
func (e *Engine) header(ctx context.Context, v *vol) (*header, error) {
	if v.hdr == nil {
		h, err := e.readHeader(ctx, v.name)
		if err != nil {
			return nil, err
		}
		v.hdr = h
	}
	return v.hdr, nil
}

// ---- storage access ----

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

// ---- group sync ----

// syncer coalesces concurrent Syncs of a store: a caller waits for a Sync
// that started after it called.
type syncer struct {
	st   store.Store
	mu   sync.Mutex
	next *syncRound // collecting callers; started when the running one ends
	busy bool
}

type syncRound struct {
	done chan struct{}
	err  error
}

func (s *syncer) sync(ctx context.Context) error {
	s.mu.Lock()
	if s.next == nil {
		s.next = &syncRound{done: make(chan struct{})}
	}
	r := s.next
	if !s.busy {
		s.busy = true
		go s.run(context.WithoutCancel(ctx))
	}
	s.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *syncer) run(ctx context.Context) {
	for {
		s.mu.Lock()
		r := s.next
		s.next = nil
		if r == nil {
			s.busy = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		r.err = s.st.Sync(ctx)
		close(r.done)
	}
}
