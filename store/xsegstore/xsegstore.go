// Package xsegstore is a store.Store (and store.Locker, store.LockWatcher)
// whose objects live behind a blocker peer: every call is a request through
// the segment. The mapper reaches its map and data blockers through it, and
// the blockers' conformance is checked through it with the same suite as
// every store.
//
// Reads and writes copy between the caller's slice and a request buffer in
// the segment; callers that can fill segment buffers directly (vlmcd) use
// requests themselves instead.
package xsegstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Caller submits requests and waits for their replies: a *peer.Client or a
// *peer.Peer.
type Caller interface {
	Alloc(n int) (*xseg.Request, error)
	Call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error)
	Put(r *xseg.Request)
}

// Store talks to the blocker bound to one port.
type Store struct {
	c      Caller
	port   int
	closed atomic.Bool
	// life ends at Close (end), and with it the LOCKWAITs in flight.
	life context.Context
	end  context.CancelFunc
	lw   lockWaits
	// MaxIO caps the bytes of one READ or WRITE request; larger calls are
	// split. Default 4 MiB.
	MaxIO int
	// MaxLockWaits caps the locks watched at once (WatchLock), each with
	// one LOCKWAIT in flight that holds a place in the blocker's nr_ops;
	// past it WatchLock fails and the caller polls. Default
	// DefaultMaxLockWaits.
	MaxLockWaits int
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Locker = (*Store)(nil)
)

// New returns a store for the blocker at port.
func New(c Caller, port int) *Store {
	s := &Store{c: c, port: port, MaxIO: 4 << 20, MaxLockWaits: DefaultMaxLockWaits}
	s.life, s.end = context.WithCancel(context.Background())
	return s
}

// do sends one request: fill prepares it, and got reads the reply before the
// request goes back to the pool. It returns the server's error.
func (s *Store) do(ctx context.Context, op xseg.Op, name string, bufLen int, fill func(r *xseg.Request) error, got func(r *xseg.Request) error) error {
	if s.closed.Load() {
		return fmt.Errorf("%s %q: store closed: %w", op, name, errs.ErrShutdown)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	r, err := s.c.Alloc(bufLen)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	r.SetOp(op)
	if err := r.SetTarget(name); err != nil {
		s.c.Put(r)
		return fmt.Errorf("%s: %w", op, err)
	}
	if fill != nil {
		if err := fill(r); err != nil {
			s.c.Put(r)
			return fmt.Errorf("%s %q: %w", op, name, err)
		}
	}
	rep, err := s.c.Call(ctx, r, s.port)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	defer s.c.Put(rep)
	if err := rep.Err(); err != nil {
		if got != nil && errors.Is(err, errs.ErrLocked) {
			return got(rep)
		}
		return fmt.Errorf("%s %q at port %d: %w", op, name, s.port, err)
	}
	if got != nil {
		return got(rep)
	}
	return nil
}

func encode(r *xseg.Request, v wire.Payload) error {
	n, err := v.MarshalTo(r.Buffer())
	if err != nil {
		return err
	}
	r.SetSize(uint64(n))
	return nil
}

func checkName(name string) error { return store.ValidName(name) }

// ReadAt implements store.Store. A read larger than MaxIO takes several
// requests, and is then not atomic against a concurrent replacement of the
// object (Copy onto it).
func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	if err := store.ValidRange(off, len(p)); err != nil {
		return 0, err
	}
	done := 0
	for {
		n := min(len(p)-done, s.MaxIO)
		got := 0
		err := s.do(ctx, xseg.OpRead, name, n, func(r *xseg.Request) error {
			r.SetOffset(uint64(off) + uint64(done))
			r.SetSize(uint64(n))
			return nil
		}, func(r *xseg.Request) error {
			got = int(min(r.Serviced(), uint64(n)))
			copy(p[done:done+got], r.Data())
			return nil
		})
		if err != nil {
			return done, err
		}
		done += got
		if got < n || done >= len(p) {
			return done, nil
		}
	}
}

// WriteAt implements store.Store.
func (s *Store) WriteAt(ctx context.Context, name string, p []byte, off int64, fua bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := store.ValidRange(off, len(p)); err != nil {
		return err
	}
	done := 0
	for {
		n := min(len(p)-done, s.MaxIO)
		err := s.do(ctx, xseg.OpWrite, name, n, func(r *xseg.Request) error {
			r.SetOffset(uint64(off) + uint64(done))
			r.SetSize(uint64(n))
			copy(r.Data(), p[done:done+n])
			if fua {
				r.SetFlags(xseg.FlagFUA)
			}
			return nil
		}, nil)
		if err != nil {
			return err
		}
		done += n
		if done >= len(p) {
			return nil
		}
	}
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	var size int64
	err := s.do(ctx, xseg.OpInfo, name, 64, nil, func(r *xseg.Request) error {
		var oi wire.ObjectInfo
		if err := oi.Unmarshal(r.Data()); err != nil {
			return err
		}
		size = int64(oi.Size)
		return nil
	})
	return size, err
}

// Truncate implements store.Store.
func (s *Store) Truncate(ctx context.Context, name string, size int64) error {
	if err := checkName(name); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("truncate %q to %d: %w", name, size, errs.ErrInvalid)
	}
	return s.do(ctx, xseg.OpTruncate, name, 0, func(r *xseg.Request) error {
		r.SetOffset(uint64(size))
		return nil
	}, nil)
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return s.do(ctx, xseg.OpDelete, name, 0, nil, nil)
}

// Copy implements store.Store: the blocker copies, the data does not pass
// through this process.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	if err := checkName(src); err != nil {
		return err
	}
	if err := checkName(dst); err != nil {
		return err
	}
	c := wire.Copy{Source: src}
	return s.do(ctx, xseg.OpCopy, dst, c.EncodedSize(), func(r *xseg.Request) error { return encode(r, &c) }, nil)
}

// Sync implements store.Store.
func (s *Store) Sync(ctx context.Context) error {
	return s.do(ctx, xseg.OpSync, "", 0, nil, nil)
}

// List implements store.Store, a page of names per request.
func (s *Store) List(ctx context.Context, prefix string, fn func(name string) error) error {
	after := ""
	// The blocker walks the whole store for every page (it answers the
	// names after After in order): pages grow, so that a listing of n
	// objects costs O(log n) walks, not n/1000.
	for buf := 64 << 10; ; buf = min(2*buf, maxListBuf) {
		var page wire.Names
		l := wire.List{Prefix: prefix, After: after}
		err := s.do(ctx, xseg.OpList, "", buf, func(r *xseg.Request) error { return encode(r, &l) }, func(r *xseg.Request) error {
			return page.Unmarshal(r.Data())
		})
		if err != nil {
			return err
		}
		for _, n := range page.Names {
			if err := fn(n); err != nil {
				return err
			}
		}
		if !page.More || len(page.Names) == 0 {
			return nil
		}
		after = page.Names[len(page.Names)-1]
	}
}

// maxListBuf bounds the buffer of one LIST page (some 100k names).
const maxListBuf = 8 << 20

// Close implements store.Store; the caller's port stays the caller's.
// It ends the LOCKWAITs in flight and wakes WatchLock's subscribers.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.end()
	s.lw.wakeAll()
	return nil
}

// TryLock implements store.Locker with ACQUIRE and NOSYNC. A context that
// ends after the request was sent does not cut the wait for its answer
// short, so that the caller always learns whether the lock is its own.
func (s *Store) TryLock(ctx context.Context, name, owner string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := store.ValidOwner(owner); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %q: %w", xseg.OpAcquire, name, err)
	}
	l := wire.Lock{Owner: owner}
	// Once sent, the answer is awaited even if ctx ends: a NOSYNC ACQUIRE
	// is answered after one store operation, and a caller that gave up
	// on it would not know whether the lock became its own. It ends with
	// the store (Close) or the blocker's death.
	return s.do(s.life, xseg.OpAcquire, name, max(l.EncodedSize(), 2048), func(r *xseg.Request) error {
		r.SetFlags(xseg.FlagNoSync)
		return encode(r, &l)
	}, func(r *xseg.Request) error {
		if r.Err() == nil {
			return nil
		}
		var lr wire.LockReply
		if err := lr.Unmarshal(r.Data()); err != nil {
			return fmt.Errorf("lock %q: %w", name, r.Err())
		}
		return &store.LockedError{Name: name, Owner: lr.Owner}
	})
}

// Unlock implements store.Locker with RELEASE (FORCE to break).
func (s *Store) Unlock(ctx context.Context, name, owner string, force bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := store.ValidOwner(owner); err != nil {
		return err
	}
	l := wire.Lock{Owner: owner}
	return s.do(ctx, xseg.OpRelease, name, l.EncodedSize(), func(r *xseg.Request) error {
		if force {
			r.SetFlags(xseg.FlagForce)
		}
		return encode(r, &l)
	}, nil)
}

// LockOwner implements store.Locker.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	var owner string
	err := s.do(ctx, xseg.OpLockOwner, name, 2048, nil, func(r *xseg.Request) error {
		var lr wire.LockReply
		if err := lr.Unmarshal(r.Data()); err != nil {
			return err
		}
		owner = lr.Owner
		return nil
	})
	return owner, err
}
