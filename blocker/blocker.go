// Package blocker turns requests from the segment into object-store
// operations: it is the common part of the file blocker (filed) and the
// RADOS blocker, which differ only in their store.Store.
//
// # Operations
//
//	READ      read Size bytes at Offset of object Target into the buffer;
//	          what lies past the object's end reads as zeros, and Serviced
//	          says how many bytes came from the object. A missing object
//	          fails with ErrNotFound (vlmcd reads it as zeros).
//	WRITE     write the buffer's Size bytes at Offset, creating the object.
//	SYNC      make every write answered so far durable (also FLUSH).
//	TRUNCATE  set the object's size to Offset.
//	DELETE    remove the object.
//	COPY      wire.Copy{Source}: Target becomes a copy of Source.
//	INFO      answer wire.ObjectInfo{Size}.
//	ACQUIRE   wire.Lock{Owner} (empty: the blocker's identity): take the
//	          lock object Target. With NOSYNC try once; otherwise wait until
//	          it is free (retrying with backoff, and at once when a store
//	          that announces releases, store.LockWatcher, says so). A
//	          failure answers ErrLocked and wire.LockReply naming the
//	          holder.
//	RELEASE   wire.Lock{Owner}: release; FORCE breaks another owner's lock.
//	HASH      answer wire.Hash: SHA-256 of the object without its
//	          trailing zeros; the content is also stored under that name,
//	          durably when HASH answers. The object is hashed in memory:
//	          one larger than MaxHashSize fails with ErrTooLarge.
//	LIST      wire.List{Prefix, After}: answer wire.Names, the names
//	          after After in byte order, as many as the buffer holds.
//	LOCKOWNER answer wire.LockReply naming the holder of lock Target
//	          (ErrNotFound if it is free).
//	LOCKWAIT  optional wire.Lock{Owner}: wait until lock Target is free
//	          (or held by Owner, if the request names one) without taking
//	          it: answered at once if it is, else when a release is
//	          announced (store.LockWatcher) or found by polling (as a
//	          waiting ACQUIRE polls), and in any case after LockWaitMax,
//	          then with ErrLocked and wire.LockReply naming the holder.
//	          It is a hint to try ACQUIRE with NOSYNC again, never a
//	          grant: the lock may be taken by someone else before the
//	          caller's try. The waiter holds no worker (it counts against
//	          nr_ops while it waits); ErrShutdown if the peer stops
//	          meanwhile.
//	PING      answered at once.
//
// # Durability
//
// A WRITE is on stable storage when it is answered if it carried FUA.
// Every other WRITE, COPY, TRUNCATE and DELETE is on stable storage once a
// later SYNC or FLUSH (or a request with the FLUSH flag, which syncs before
// it is served) has been answered. Locks are durable when ACQUIRE answers,
// and the content object that HASH names when HASH answers (a map may
// point at it at once).
package blocker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Blocker serves object requests from one store.
type Blocker struct {
	st    store.Store
	lk    store.Locker // nil if the store has no locks
	ident string
	// LockPoll is how soon a waiting ACQUIRE first retries; the pause
	// doubles after each try up to LockPollMax, so that many waiters on a
	// long-held lock do not storm the store. If the store announces
	// releases (store.LockWatcher), a waiter also retries as soon as the
	// lock may have been released, and its pause grows up to
	// max(LockPollMax, LockWatchPollMax): polling then only covers the
	// releases that went unannounced.
	LockPoll, LockPollMax, LockWatchPollMax time.Duration
	// LockWaitMax is the longest a LOCKWAIT waits (DefaultLockWaitMax if
	// not positive): then it answers that the lock is still held, and the
	// caller asks again. It bounds how long a LOCKWAIT whose caller gave
	// up holds a place in nr_ops.
	LockWaitMax time.Duration
	// MaxHashSize is the largest object HASH reads (into memory).
	MaxHashSize int64
}

// DefaultMaxHashSize is MaxHashSize unless set: the largest block of a
// volume.
const DefaultMaxHashSize = 64 << 20

// DefaultLockWaitMax is LockWaitMax unless set.
const DefaultLockWaitMax = 2 * time.Second

var _ peer.Handler = (*Blocker)(nil)

// New returns a blocker over st. ident is the lock owner used when a
// request names none (default "<hostname>_<pid>").
func New(st store.Store, ident string) *Blocker {
	if ident == "" {
		h, _ := os.Hostname()
		ident = h + "_" + strconv.Itoa(os.Getpid())
	}
	// LockPollMax is the volume engine's own poll pause (1 ms doubling to
	// 100 ms) before its waits went through LOCKWAIT: over a store that
	// does not announce releases (filed) a waiting write finds a release
	// as soon as it did then.
	b := &Blocker{st: st, ident: ident, LockPoll: 5 * time.Millisecond, LockPollMax: 100 * time.Millisecond,
		LockWatchPollMax: 2 * time.Second, LockWaitMax: DefaultLockWaitMax, MaxHashSize: DefaultMaxHashSize}
	b.lk, _ = st.(store.Locker)
	return b
}

// Serve implements peer.Handler. An ACQUIRE of a lock another owner
// holds and a LOCKWAIT that has to wait are Deferred: the blocker answers
// them once the lock is free (or the wait ends), holding no worker
// meanwhile; everything else is Served.
func (b *Blocker) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	res, err := b.serve(ctx, p, r)
	if err != nil {
		return res, fmt.Errorf("%s %q: %w", r.Op(), r.Target(), err)
	}
	return res, nil
}

func (b *Blocker) serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	if r.Flags()&xseg.FlagFlush != 0 {
		if err := b.st.Sync(ctx); err != nil {
			return peer.Served, err
		}
	}
	switch name := r.Target(); r.Op() {
	case xseg.OpAcquire:
		return b.acquire(ctx, p, r, name)
	case xseg.OpLockWait:
		return b.lockWait(ctx, p, r, name)
	default:
		return peer.Served, b.serveNow(ctx, r, name)
	}
}

// serveNow serves the requests that are answered at once.
func (b *Blocker) serveNow(ctx context.Context, r *xseg.Request, name string) error {
	switch r.Op() {
	case xseg.OpPing:
		return nil
	case xseg.OpRead:
		return b.read(ctx, r, name)
	case xseg.OpWrite:
		if r.Size() > uint64(len(r.Buffer())) {
			return fmt.Errorf("size %d beyond the %d-byte buffer: %w", r.Size(), len(r.Buffer()), errs.ErrInvalid)
		}
		if err := b.st.WriteAt(ctx, name, r.Data(), int64(r.Offset()), r.Flags()&xseg.FlagFUA != 0); err != nil {
			return err
		}
		r.SetServiced(r.Size())
		return nil
	case xseg.OpSync, xseg.OpFlush:
		return b.st.Sync(ctx)
	case xseg.OpTruncate:
		return b.st.Truncate(ctx, name, int64(r.Offset()))
	case xseg.OpDelete:
		return b.st.Delete(ctx, name)
	case xseg.OpCopy:
		var c wire.Copy
		if err := c.Unmarshal(r.Data()); err != nil {
			return err
		}
		return b.st.Copy(ctx, c.Source, name)
	case xseg.OpInfo:
		n, err := b.st.Stat(ctx, name)
		if err != nil {
			return err
		}
		return peer.Reply(r, &wire.ObjectInfo{Size: uint64(n)})
	case xseg.OpRelease:
		if b.lk == nil {
			return errs.ErrNotSupported
		}
		owner, err := b.owner(r)
		if err != nil {
			return err
		}
		return b.lk.Unlock(ctx, name, owner, r.Flags()&xseg.FlagForce != 0)
	case xseg.OpHash:
		return b.hash(ctx, r, name)
	case xseg.OpList:
		return b.list(ctx, r)
	case xseg.OpLockOwner:
		if b.lk == nil {
			return errs.ErrNotSupported
		}
		owner, err := b.lk.LockOwner(ctx, name)
		if err != nil {
			return err
		}
		return peer.Reply(r, &wire.LockReply{Owner: owner})
	}
	return fmt.Errorf("blocker does not serve %s: %w", r.Op(), errs.ErrNotSupported)
}

func (b *Blocker) read(ctx context.Context, r *xseg.Request, name string) error {
	if r.Size() > uint64(len(r.Buffer())) {
		return fmt.Errorf("size %d beyond the %d-byte buffer: %w", r.Size(), len(r.Buffer()), errs.ErrInvalid)
	}
	p := r.Data()
	n, err := b.st.ReadAt(ctx, name, p, int64(r.Offset()))
	if err != nil {
		return err
	}
	clear(p[n:])
	r.SetServiced(uint64(n))
	return nil
}

func (b *Blocker) owner(r *xseg.Request) (string, error) {
	if r.Size() == 0 {
		return b.ident, nil
	}
	var l wire.Lock
	if err := l.Unmarshal(r.Data()); err != nil {
		return "", err
	}
	if l.Owner == "" {
		return b.ident, nil
	}
	return l.Owner, nil
}

// acquire serves ACQUIRE: it takes the lock, or fails with the holder's
// name if the request says not to wait (FlagNoSync), or else waits for
// the lock without holding a worker (Deferred).
func (b *Blocker) acquire(ctx context.Context, p *peer.Peer, r *xseg.Request, name string) (peer.Result, error) {
	if b.lk == nil {
		return peer.Served, errs.ErrNotSupported
	}
	owner, err := b.owner(r)
	if err != nil {
		return peer.Served, err
	}
	try := func() (error, bool) {
		err := b.lk.TryLock(ctx, name, owner)
		var le *store.LockedError
		if !errors.As(err, &le) {
			return err, false
		}
		peer.ReplyLockOwner(r, err) // tell the caller who holds it; keep the lock error
		return err, true
	}
	err, held := try()
	if !held || r.Flags()&xseg.FlagNoSync != 0 || p == nil {
		return peer.Served, err
	}
	// Wait for the lock without holding a worker: the answer comes from
	// this goroutine once the lock is ours, or fails at shutdown.
	go func() {
		// settled tries again and answers unless the lock is still held.
		settled := func() bool {
			err, held := try()
			if held {
				return false
			}
			if err != nil {
				err = fmt.Errorf("%s %q: %w", r.Op(), name, err)
			}
			p.Answer(r, err)
			return true
		}
		if err := b.waitLock(ctx, p, name, 0, settled); err != nil {
			p.Answer(r, fmt.Errorf("%s %q: waiting for the lock: %w", r.Op(), name, err))
		}
	}()
	return peer.Deferred, nil
}

// errWaitedLong is waitLock's error when its time limit passed.
var errWaitedLong = errors.New("waited long enough")

// waitLock waits until settled reports true, calling it when the store
// may have seen lock name released: after subscribing to the lock's
// releases (if the store announces them, store.LockWatcher; a release
// before the subscription is not announced), on every announcement, and
// at every poll, whose pause starts at LockPoll and doubles up to
// LockPollMax (max(LockPollMax, LockWatchPollMax) while subscribed:
// polling then only covers releases that went unannounced). It returns
// nil once settled, errs.ErrShutdown if ctx ends first, and errWaitedLong
// if limit (unless 0) passes first.
func (b *Blocker) waitLock(ctx context.Context, p *peer.Peer, name string, limit time.Duration, settled func() bool) error {
	pauseMax := max(b.LockPollMax, b.LockPoll)
	var wake <-chan struct{}
	if lw, ok := b.lk.(store.LockWatcher); ok {
		c, cancel, err := lw.WatchLock(ctx, name)
		if err != nil {
			p.Logger().Debug("waiting for a lock by polling", "lock", name, "err", err)
		} else {
			defer cancel()
			wake, pauseMax = c, max(pauseMax, b.LockWatchPollMax)
			// The lock may have been released before the watch began.
			if settled() {
				return nil
			}
		}
	}
	var deadline <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		deadline = t.C
	}
	pause := b.LockPoll
	poll := time.NewTimer(pause)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return errs.ErrShutdown
		case <-deadline:
			return errWaitedLong
		case <-wake:
		case <-poll.C:
			pause = min(2*pause, pauseMax)
		}
		if settled() {
			return nil
		}
		poll.Reset(pause)
	}
}

// lockWait serves LOCKWAIT: it answers once lock name is free (or held by
// the owner the request names), and with ErrLocked naming the holder if
// it is still held after LockWaitMax. It never takes the lock, so a
// caller that gave up leaves nothing behind but a request answered at
// most LockWaitMax later.
func (b *Blocker) lockWait(ctx context.Context, p *peer.Peer, r *xseg.Request, name string) (peer.Result, error) {
	if b.lk == nil {
		return peer.Served, errs.ErrNotSupported
	}
	var owner string // "" unless the request names one: only free will do
	if r.Size() > 0 {
		var l wire.Lock
		if err := l.Unmarshal(r.Data()); err != nil {
			return peer.Served, err
		}
		owner = l.Owner
	}
	holder := ""
	// free asks the store; done is false while another owner holds the
	// lock (then holder names it), else err is the answer.
	free := func() (done bool, err error) {
		h, err := b.lk.LockOwner(ctx, name)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			return true, nil
		case err != nil:
			return true, err
		case owner != "" && h == owner:
			return true, nil
		}
		holder = h
		return false, nil
	}
	held := func() error {
		err := &store.LockedError{Name: name, Owner: holder}
		peer.ReplyLockOwner(r, err)
		return err
	}
	if done, err := free(); done || p == nil {
		if !done {
			return peer.Served, held()
		}
		return peer.Served, err
	}
	limit := b.LockWaitMax
	if limit <= 0 {
		limit = DefaultLockWaitMax
	}
	// Wait without holding a worker, as a waiting ACQUIRE does.
	go func() {
		var answer error
		err := b.waitLock(ctx, p, name, limit, func() bool {
			done, err := free()
			answer = err
			return done
		})
		switch {
		case errors.Is(err, errWaitedLong):
			answer = fmt.Errorf("still held after %v: %w", limit, held())
		case err != nil:
			answer = fmt.Errorf("waiting for the lock: %w", err)
		}
		if answer != nil {
			answer = fmt.Errorf("%s %q: %w", r.Op(), name, answer)
		}
		p.Answer(r, answer)
	}()
	return peer.Deferred, nil
}

// hash computes the content hash of an object (without trailing zeros,
// so that a block and its zero-padded copy hash alike) and stores the
// content under that name if it is not there yet. The content object is
// durable when hash returns.
func (b *Blocker) hash(ctx context.Context, r *xseg.Request, name string) error {
	size, err := b.st.Stat(ctx, name)
	if err != nil {
		return err
	}
	// The size is the client's to choose (one byte written far out makes
	// a sparse object of any size): read no more than a block.
	if size > b.MaxHashSize {
		return fmt.Errorf("object of %d bytes, HASH reads at most %d: %w", size, b.MaxHashSize, errs.ErrTooLarge)
	}
	buf := make([]byte, size)
	n, err := b.st.ReadAt(ctx, name, buf, 0)
	if err != nil {
		return err
	}
	buf = buf[:n]
	end := len(buf)
	for end > 0 && buf[end-1] == 0 {
		end--
	}
	sum := sha256.Sum256(buf[:end])
	h := hex.EncodeToString(sum[:])
	if end > 0 { // the zero block is never stored
		if err := b.storeAs(ctx, h, buf[:end]); err != nil {
			return err
		}
		// Sync even if the object was there: whoever stored it may not
		// have synced yet (a HASH in flight, or a plain WRITE).
		if err := b.st.Sync(ctx); err != nil {
			return err
		}
	}
	return peer.Reply(r, &wire.Hash{Hash: h, Size: uint64(end)})
}

// storeAs stores content under a content-addressed name unless it is there.
// It writes a temporary object and copies it into place, so a crash never
// leaves a partial object under the hash.
func (b *Blocker) storeAs(ctx context.Context, name string, content []byte) error {
	if _, err := b.st.Stat(ctx, name); !errors.Is(err, errs.ErrNotFound) {
		return err
	}
	tmp := name + ".tmp." + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := b.st.WriteAt(ctx, tmp, content, 0, false); err != nil {
		return err
	}
	defer b.st.Delete(ctx, tmp)
	return b.st.Copy(ctx, tmp, name)
}

// list answers a page of object names, sorted, after l.After.
func (b *Blocker) list(ctx context.Context, r *xseg.Request) error {
	var l wire.List
	if err := l.Unmarshal(r.Data()); err != nil {
		return err
	}
	var names []string
	err := b.st.List(ctx, l.Prefix, func(name string) error {
		if name > l.After {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	return peer.ReplyNames(r, names)
}
