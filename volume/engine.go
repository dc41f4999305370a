package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/wire"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Limits.
const (
	// MaxSize is the largest volume: 2^60 bytes (1 EiB).
	MaxSize = wire.MaxVolumeSize
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
	// Logger receives damaged and unreadable map objects; nil:
	// slog.Default().
	Logger *slog.Logger
	// Drain, if set, is called before and after the engine gives a lock
	// back on its own (the last session that may write ended): whoever
	// writes data into the volume's objects or caches its mappings (vlmcd)
	// lets its writes in flight end and forgets the mappings.
	Drain func(ctx context.Context, name string)
	// OnLockWait, if set, is called when a MapWrite or Trim of volume
	// name finds its lock held by another owner and starts to wait; the
	// function it returns is called once when the wait ends, err nil if
	// the lock was got (metrics: internal/metrics.LockWaits.Begin).
	OnLockWait func(name string) (end func(err error))
	// Intents, if set, records the volumes whose lock an operation (create,
	// clone, snapshot, rename, resize, remove) takes for its own time, from
	// before the lock is taken until it is given back; RecoverIntents gives
	// back the locks that a killed predecessor with the same owner took so
	// and never gave back (no session ever used them, nobody on this host
	// would release them, and other hosts' writes would wait for them).
	Intents Intents
}

// Intents is a persistent set of volume names (mapperd keeps it in a file
// beside its pidfile, mapper.FileIntents).
type Intents interface {
	// Begin adds name; it must be on stable storage when Begin returns.
	Begin(name string) error
	// End removes name (best effort: a name left behind costs one
	// owner-checked unlock at the next start).
	End(name string)
	// Pending lists the names begun and not ended.
	Pending() ([]string, error)
}

// Piece is one piece of a mapped range: Size bytes at Offset of Object.
// A Zero piece has no object and reads as zeros (consecutive zero blocks
// form one piece, with Offset 0). ReadOnly means a write would need
// copy-on-write first (always so for zero pieces and snapshots).
type Piece struct {
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
	dmg        damageLog

	// Tunables, changed only by tests before use. A waiting MapWrite or
	// Trim retries after pollMin, doubling up to pollMax; when the locker
	// announces releases (store.LockWatcher) it retries on each
	// announcement and its pause grows up to max(pollMax, pollWatchMax).
	pollMin, pollMax, pollWatchMax time.Duration
	// onWait, if set, is called each time MapWrite or Trim finds the lock
	// held by owner and is about to wait.
	onWait func(name, owner string)
	// hook, if set (tests), is called at points where an operation has
	// written objects it has not linked yet: "copied" (a write's
	// copy-on-write, copies durable, map not committed), "pages" (create
	// or clone, fresh pages written, header not).
	hook     func(point, name string)
	maxPages int // cached pages per volume
	// shared caches, by object name, map pages that a volume read without
	// its lock reaches and does not own (shared with snapshots and
	// clones): nothing writes those in place, so they may be kept across
	// reads (see pager.get).
	shared sharedPages
	// confirmEvery and fenceWait: ConfirmEvery and FenceWait (fence.go).
	confirmEvery, fenceWait time.Duration
	drain                   func(ctx context.Context, name string)
	onLockWait              func(name string) func(error)
	intents                 Intents
	leftMu                  sync.Mutex // guards leftover
	leftover                []string   // intents of an earlier process, to recover

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
	// confirmed: when the store last said the lock is ours (fence.go).
	confirmed time.Time
	// fenced: we held the lock and found it broken; fencedBy holds it
	// now ("" if free).
	fenced   bool
	fencedBy string
	// pinned: an explicit Open or Lock keeps the lock until Close.
	pinned bool
	// releaseDue: giving the lock back failed (the sync before it, or
	// the unlock itself, e.g. while a blocker restarted); RetryReleases
	// tries again, so that a lock nobody uses here does not stay taken
	// and make the other hosts' writes wait forever.
	releaseDue bool
	// sessions: this host's connections to the volume (session.go).
	sessions map[SessionKey]*session
	// waits: the holdWait calls waiting for another owner's lock, with
	// the function that cancels each.
	waits map[*int]context.CancelCauseFunc
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
	var leftover []string
	if opts.Intents != nil {
		var err error
		if leftover, err = opts.Intents.Pending(); err != nil {
			return nil, fmt.Errorf("volume: pending lock intents: %w", err)
		}
	}
	return &Engine{
		leftover: leftover,
		maps:     maps, data: data, locker: locker,
		owner: opts.Owner, blockSize: bs,
		dataSync: &syncer{st: data}, mapsSync: &syncer{st: maps},
		dmg:     damageLog{logger: opts.Logger},
		pollMin: time.Millisecond, pollMax: 100 * time.Millisecond, pollWatchMax: 2 * time.Second,
		maxPages: 4096, confirmEvery: ConfirmEvery, fenceWait: FenceWait,
		drain: opts.Drain, onLockWait: opts.OnLockWait, intents: opts.Intents,
		vols: make(map[string]*vol),
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
// store who holds the lock: another host may have broken it with force
// since, and then v is fenced (fence.go) and op fails.
func (e *Engine) tryLock(ctx context.Context, op string, v *vol) (was bool, err error) {
	was = v.isHeld()
	if was {
		// Asked, not taken again: a lock found free was broken, and
		// taking it back would let this host's writers go on as if
		// nothing happened (fence.go).
		if err := e.confirm(ctx, v, 0); err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		return true, nil
	}
	start := time.Now()
	if e.intents != nil {
		if err := e.intents.Begin(v.name); err != nil {
			return false, fmt.Errorf("%s: volume %q: record the lock's intent: %w", op, v.name, err)
		}
	}
	if err := e.locker.TryLock(ctx, lockName(v.name), e.owner); err != nil {
		e.endIntent(v.name)
		return false, lockedErr(op, v.name, err)
	}
	v.mu.Lock()
	v.held = true
	v.releaseDue = false // taken afresh: its holder decides
	v.confirmed = start
	v.forget()
	v.mu.Unlock()
	return false, nil
}

// release gives up v's lock and cache unless keep. Caller holds v.gate
// exclusively, or shared when the volume vanished under it (heldHeader).
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
		// A failure leaves the lock held (it is re-entrant for us) and is
		// tried again by RetryReleases.
		err := e.locker.Unlock(context.WithoutCancel(ctx), lockName(v.name), e.owner, false)
		if err != nil && !errors.Is(err, errs.ErrNotFound) && !errors.Is(err, errs.ErrNotOwner) {
			v.mu.Lock()
			v.releaseDue = true
			v.mu.Unlock()
			e.dmg.log().Warn("giving a volume's lock back failed; will try again", "volume", v.name, "err", err)
			return
		}
	}
	e.endIntent(v.name)
}

// endIntent ends the intent of an operation on volume name (its lock was
// given back, or kept on purpose by vlmc open/lock).
func (e *Engine) endIntent(name string) {
	if e.intents != nil {
		e.intents.End(name)
	}
}

// RecoverIntents gives back the locks that an earlier process of this
// owner took for operations that never ended (it was killed in the
// middle): the intents pending when the engine was made. Each such lock
// still held by this owner is unlocked (never one of another owner, nor
// one this process holds now), and its intent ended. A failure (the maps
// blocker restarting) leaves the rest for the next call: the mapper calls
// it before it serves anything, then every second until it succeeds.
func (e *Engine) RecoverIntents(ctx context.Context) error {
	e.leftMu.Lock()
	defer e.leftMu.Unlock()
	for len(e.leftover) > 0 {
		name := e.leftover[0]
		v := e.vol(name)
		v.gate.Lock()
		var err error
		if !v.isHeld() { // held now: this process took it, and gives it back
			err = e.locker.Unlock(ctx, lockName(name), e.owner, false)
			if err == nil {
				e.dmg.log().Warn("gave back a volume's lock that an operation killed in the middle left", "volume", name)
			}
		}
		v.gate.Unlock()
		if err != nil && !errors.Is(err, errs.ErrNotFound) && !errors.Is(err, errs.ErrNotOwner) {
			return fmt.Errorf("volume %q: give back the lock of an interrupted operation: %w", name, err)
		}
		e.intents.End(name)
		e.leftover = e.leftover[1:]
	}
	return nil
}

// tryHold takes v's lock for I/O if it is free or ours: true if v is held
// afterwards. Caller holds v.gate shared.
func (e *Engine) tryHold(ctx context.Context, v *vol) (bool, string, error) {
	if v.isHeld() {
		return true, "", nil
	}
	if e.Fenced(v.name) {
		return false, "", e.fencedError(v)
	}
	start := time.Now()
	err := e.locker.TryLock(ctx, lockName(v.name), e.owner)
	var le *store.LockedError
	switch {
	case err == nil:
		v.mu.Lock()
		if v.fenced { // fenced since the check: give the lock back
			v.mu.Unlock()
			_ = e.locker.Unlock(context.WithoutCancel(ctx), lockName(v.name), e.owner, false)
			return false, "", e.fencedError(v)
		}
		if !v.held {
			v.held = true
			v.releaseDue = false // taken afresh for this write
			v.forget()
		}
		v.confirmed = start
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
//
// A wait is cancelled when the last session of the volume on this host
// ends or is left by its client (cancelOrphanWaits): the write belongs to
// nobody any more.
func (e *Engine) holdWait(ctx context.Context, v *vol) (err error) {
	var endWait func(error) // set once the wait for another owner starts
	defer func() {
		if endWait != nil {
			endWait(err)
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := new(int)
	v.mu.Lock()
	if len(v.sessions) > 0 && v.orphaned() {
		v.mu.Unlock()
		return fmt.Errorf("volume %q: no connection on this host uses it any more: %w", v.name, errs.ErrShutdown)
	}
	if v.waits == nil {
		v.waits = make(map[*int]context.CancelCauseFunc)
	}
	v.waits[w] = cancel
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		delete(v.waits, w)
		v.mu.Unlock()
	}()
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
			if ctx.Err() != nil {
				return fmt.Errorf("volume %q: waiting for the lock: %w", v.name, context.Cause(ctx))
			}
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
		if endWait == nil && e.onLockWait != nil {
			endWait = e.onLockWait(v.name)
		}
		if e.onWait != nil {
			e.onWait(v.name, owner)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("volume %q: waiting for the lock held by %s: %w", v.name, owner, context.Cause(ctx))
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
		e.repairHeader(ctx, v, h)
		v.hdr = h
	}
	return v.hdr, nil
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
