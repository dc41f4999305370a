// Package faultstore wraps a store.Store (and its store.Locker) to count
// calls and to inject faults, for the tests and benchmarks of every package
// that talks to storage.
//
// # Crashes and failures at a numbered call
//
// Mutating calls (WriteAt, Copy, Truncate, Delete, Sync) of every Store
// that shares one Plan are numbered from 0 in the order they start. At the
// armed index the Plan either fails the call (Fail: it does nothing and
// returns an error; FailAfter: it is done but reports an error) or crashes:
// the call and every later call of every Store on the Plan fail and reach
// nothing, as if the process died. A crash at a FUA write may first
// persist a torn prefix of it (Plan.Torn), as a power cut can. Lock calls
// are never an index, but fail after a crash.
//
// # Faults by object and operation
//
// Plan.Inject adds a Rule: for the calls it matches (operations, objects,
// store, after Skip matching calls, at most Times of them) it slows the
// call down (Delay), fails it with a system error as a store on a real
// device would report it (Errno: EIO, ENOSPC, EROFS, ...; before or After
// the call is done), or makes the object look damaged to readers: a byte
// flipped (Flip), cut short (Truncated, Size) or gone (Missing). These
// change what a call returns, not what is stored; FlipByte damages a
// stored object for good (truncation and deletion at rest are the store's
// own Truncate and Delete).
package faultstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Mode is what happens at the armed index.
type Mode int

// Modes.
const (
	Fail Mode = iota
	FailAfter
	Crash
)

// Counts are calls seen by a Plan, by kind.
type Counts struct {
	Reads, Writes, FUAWrites, Copies, Truncates, Deletes, Syncs, Stats, Locks int64
}

// Op is a set of store operations, for Rule.Ops.
type Op uint16

// Operations.
const (
	OpRead     Op = 1 << iota // ReadAt
	OpWrite                   // WriteAt
	OpStat                    // Stat
	OpTruncate                // Truncate
	OpDelete                  // Delete
	OpCopy                    // Copy (the rule's object is the source or the destination)
	OpSync                    // Sync (no object)
	OpList                    // List (Missing objects are left out; otherwise no object)
	OpLock                    // TryLock, Unlock, LockOwner (the object is the lock's name)

	OpAll = OpRead | OpWrite | OpStat | OpTruncate | OpDelete | OpCopy | OpSync | OpList | OpLock
)

var opNames = []string{"read", "write", "stat", "truncate", "delete", "copy", "sync", "list", "lock"}

func (o Op) String() string {
	var s []string
	for i, n := range opNames {
		if o&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	return strings.Join(s, "|")
}

// Rule is a fault for the calls it matches. The zero Rule matches every
// call and does nothing.
type Rule struct {
	// Ops are the operations it applies to; 0 means all.
	Ops Op
	// Object selects objects (or lock names) by name; nil means all, and
	// then calls without an object (Sync, List) match too.
	Object func(name string) bool
	// Store, if set, limits the rule to the Stores wrapping this store.
	Store store.Store
	// Skip lets this many matching calls pass untouched first; Times, if
	// not 0, is how many calls it affects after that.
	Skip, Times int

	// Delay makes the call wait this long first (slow I/O), or until its
	// context ends.
	Delay time.Duration
	// Errno fails the call with this system error, wrapped as the file
	// store wraps it (ENOSPC and EDQUOT in errs.ErrNoSpace, ENOENT in
	// errs.ErrNotFound, anything else in errs.ErrIO), without doing it, or
	// after doing it if After is set.
	Errno syscall.Errno
	After bool
	// Flip: a ReadAt returns the byte at offset FlipAt of the object
	// XORed with FlipMask (0 means 0xff) if it reads that byte.
	Flip     bool
	FlipAt   int64
	FlipMask byte
	// Truncated: the object looks Size bytes long to ReadAt and Stat
	// (if it is longer).
	Truncated bool
	Size      int64
	// Missing: the object looks absent: ReadAt, Stat, Truncate, Delete
	// and Copy from it fail with errs.ErrNotFound, List leaves it out.
	// Writes are not affected.
	Missing bool
}

// Fault is an injected Rule.
type Fault struct {
	p    *Plan
	r    Rule
	seen int // matching calls so far
	hits int // calls affected
}

// Hits returns the number of calls the fault affected.
func (f *Fault) Hits() int {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	return f.hits
}

// Remove stops the fault.
func (f *Fault) Remove() {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	for i, g := range f.p.faults {
		if g == f {
			f.p.faults = append(f.p.faults[:i:i], f.p.faults[i+1:]...)
			return
		}
	}
}

// Plan decides the fault; share one between the stores of an engine.
type Plan struct {
	mu      sync.Mutex
	next    int64
	at      int64
	mode    Mode
	crashed bool
	fired   bool
	rng     *rand.Rand
	// Torn makes a crash at a FUA write of more than 512 bytes persist a
	// random whole-sector prefix of it first.
	Torn   bool
	counts Counts
	faults []*Fault
}

// NewPlan returns a Plan that injects nothing (a counter).
func NewPlan(seed uint64) *Plan {
	return &Plan{at: -1, rng: rand.New(rand.NewPCG(seed, 0x5eed))}
}

// Arm injects mode at mutating call index at (counted from the start).
func (p *Plan) Arm(at int64, mode Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at, p.mode, p.fired = at, mode, false
}

// Disarm stops injecting at an index; a crash stays a crash.
func (p *Plan) Disarm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at = -1
}

// Inject adds a fault for the calls r matches, after those added before.
func (p *Plan) Inject(r Rule) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := &Fault{p: p, r: r}
	p.faults = append(p.faults, f)
	return f
}

// Clear removes every injected fault.
func (p *Plan) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Index returns the number of mutating calls so far.
func (p *Plan) Index() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// Fired tells whether the armed fault happened.
func (p *Plan) Fired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired
}

// Crashed tells whether the Plan crashed.
func (p *Plan) Crashed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.crashed
}

// Counts returns the calls seen so far; Reset clears them.
func (p *Plan) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// Reset clears the counts.
func (p *Plan) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = Counts{}
}

// ErrInjected is the error of an injected failure; it wraps errs.ErrIO.
var ErrInjected = fmt.Errorf("faultstore: injected failure: %w", errs.ErrIO)

var errCrashed = fmt.Errorf("faultstore: crashed: %w", errs.ErrIO)

type verdict int

const (
	pass verdict = iota
	failBefore
	failAfter
	crashNow  // crashed before
	crashHere // crashes at this call
)

// step numbers a mutating call and says what to do with it.
func (p *Plan) step(count *int64) verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.crashed {
		return crashNow
	}
	*count++
	i := p.next
	p.next++
	if i != p.at {
		return pass
	}
	p.fired = true
	switch p.mode {
	case Fail:
		return failBefore
	case FailAfter:
		return failAfter
	}
	p.crashed = true
	return crashHere
}

func (p *Plan) read(count *int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.crashed {
		return errCrashed
	}
	*count++
	return nil
}

// effect is what the matching faults do to one call.
type effect struct {
	delay   time.Duration
	err     error // fail with it
	after   bool  // ... after doing the call
	missing bool
	flips   []flip
	size    int64 // >= 0: the object looks this long
}

type flip struct {
	at   int64
	mask byte
}

// match collects the effects of the faults on a call of op on object
// name ("" for none) of the store s.
func (p *Plan) match(s store.Store, op Op, name string) effect {
	ef := effect{size: -1}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.faults {
		r := &f.r
		switch {
		case r.Ops != 0 && r.Ops&op == 0,
			r.Store != nil && r.Store != s,
			r.Object != nil && (name == "" || !r.Object(name)):
			continue
		}
		f.seen++
		if f.seen <= r.Skip || (r.Times > 0 && f.hits >= r.Times) {
			continue
		}
		f.hits++
		ef.delay += r.Delay
		if r.Errno != 0 && ef.err == nil {
			ef.err, ef.after = sysErr(op, name, r.Errno), r.After
		}
		ef.missing = ef.missing || r.Missing
		if r.Flip {
			m := r.FlipMask
			if m == 0 {
				m = 0xff
			}
			ef.flips = append(ef.flips, flip{r.FlipAt, m})
		}
		if r.Truncated && (ef.size < 0 || r.Size < ef.size) {
			ef.size = max(r.Size, 0)
		}
	}
	return ef
}

// sysErr wraps a system error as the file store does.
func sysErr(op Op, name string, errno syscall.Errno) error {
	sentinel := errs.ErrIO
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT:
		sentinel = errs.ErrNoSpace
	case syscall.ENOENT:
		sentinel = errs.ErrNotFound
	}
	return fmt.Errorf("faultstore: %s object %q: %w: %w (injected)", op, name, sentinel, errno)
}

func notFound(op Op, name string) error {
	return fmt.Errorf("faultstore: %s object %q: %w: %w (injected)", op, name, errs.ErrNotFound, syscall.ENOENT)
}

// wait sleeps for the delay of ef, or until ctx ends.
func (ef *effect) wait(ctx context.Context) error {
	if ef.delay <= 0 {
		return nil
	}
	t := time.NewTimer(ef.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("faultstore: slow call: %w", ctx.Err())
	}
}

// Store is a faulty view of an inner store.
type Store struct {
	inner  store.Store
	p      *Plan
	closed atomic.Bool
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Locker = (*Store)(nil)
)

// Wrap returns s seen through p. Locker calls go to s, which must
// implement store.Locker if they are used.
func Wrap(s store.Store, p *Plan) *Store { return &Store{inner: s, p: p} }

// Inner returns the wrapped store.
func (s *Store) Inner() store.Store { return s.inner }

// pre applies the faults of a call before it is made: it returns the
// effect, and an error if the call must fail without being made.
func (s *Store) pre(ctx context.Context, op Op, names ...string) (effect, error) {
	var ef effect
	if s.closed.Load() {
		return ef, fmt.Errorf("faultstore: %s: store closed: %w", op, errs.ErrShutdown)
	}
	if len(names) == 0 {
		ef = s.p.match(s.inner, op, "")
	}
	for i, n := range names {
		e := s.p.match(s.inner, op, n)
		if i == 0 {
			ef = e
			continue
		}
		// Copy: the destination's faults count too, but it is never
		// "missing" for the call (it is written).
		ef.delay += e.delay
		if ef.err == nil {
			ef.err, ef.after = e.err, e.after
		}
	}
	if err := ef.wait(ctx); err != nil {
		return ef, err
	}
	if ef.missing && op != OpWrite {
		return ef, notFound(op, names[0])
	}
	if ef.err != nil && !ef.after {
		return ef, ef.err
	}
	return ef, nil
}

// post returns the error of a call that was made.
func (ef *effect) post(err error) error {
	if err == nil && ef.err != nil {
		return ef.err
	}
	return err
}

func (s *Store) do(count *int64, op func() error) error {
	switch s.p.step(count) {
	case failBefore:
		return ErrInjected
	case crashNow, crashHere:
		return errCrashed
	case failAfter:
		if err := op(); err != nil {
			return err
		}
		return ErrInjected
	}
	return op()
}

// ReadAt implements store.Store.
func (s *Store) ReadAt(ctx context.Context, name string, b []byte, off int64) (int, error) {
	if err := s.p.read(&s.p.counts.Reads); err != nil {
		return 0, err
	}
	ef, err := s.pre(ctx, OpRead, name)
	if err != nil {
		return 0, err
	}
	n, err := s.inner.ReadAt(ctx, name, b, off)
	if err != nil {
		return n, err
	}
	if ef.size >= 0 && off+int64(n) > ef.size {
		m := int(max(ef.size-off, 0))
		clear(b[m:n])
		n = m
	}
	for _, f := range ef.flips {
		if f.at >= off && f.at < off+int64(n) {
			b[f.at-off] ^= f.mask
		}
	}
	return n, ef.post(nil)
}

// WriteAt implements store.Store.
func (s *Store) WriteAt(ctx context.Context, name string, b []byte, off int64, fua bool) error {
	count := &s.p.counts.Writes
	if fua {
		count = &s.p.counts.FUAWrites
	}
	v := s.p.step(count)
	switch v {
	case failBefore:
		return ErrInjected
	case crashNow:
		return errCrashed
	case crashHere:
		s.p.mu.Lock()
		torn := s.p.Torn && fua && len(b) > 512
		var cut int
		if torn {
			cut = 512 * (1 + s.p.rng.IntN((len(b)-1)/512))
		}
		s.p.mu.Unlock()
		if torn {
			_ = s.inner.WriteAt(ctx, name, b[:cut], off, true)
		}
		return errCrashed
	}
	ef, err := s.pre(ctx, OpWrite, name)
	if err != nil {
		return err
	}
	if err := s.inner.WriteAt(ctx, name, b, off, fua); err != nil {
		return err
	}
	if v == failAfter {
		return ErrInjected
	}
	return ef.post(nil)
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := s.p.read(&s.p.counts.Stats); err != nil {
		return 0, err
	}
	ef, err := s.pre(ctx, OpStat, name)
	if err != nil {
		return 0, err
	}
	n, err := s.inner.Stat(ctx, name)
	if err == nil && ef.size >= 0 {
		n = min(n, ef.size)
	}
	if err != nil {
		return n, err
	}
	return n, ef.post(nil)
}

// mutate is a mutating call: numbered by the Plan, then subject to the
// faults.
func (s *Store) mutate(ctx context.Context, count *int64, op Op, call func() error, names ...string) error {
	return s.do(count, func() error {
		ef, err := s.pre(ctx, op, names...)
		if err != nil {
			return err
		}
		if err := call(); err != nil {
			return err
		}
		return ef.post(nil)
	})
}

// Truncate implements store.Store.
func (s *Store) Truncate(ctx context.Context, name string, size int64) error {
	return s.mutate(ctx, &s.p.counts.Truncates, OpTruncate,
		func() error { return s.inner.Truncate(ctx, name, size) }, name)
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	return s.mutate(ctx, &s.p.counts.Deletes, OpDelete,
		func() error { return s.inner.Delete(ctx, name) }, name)
}

// Copy implements store.Store.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	return s.mutate(ctx, &s.p.counts.Copies, OpCopy,
		func() error { return s.inner.Copy(ctx, src, dst) }, src, dst)
}

// Sync implements store.Store.
func (s *Store) Sync(ctx context.Context) error {
	return s.mutate(ctx, &s.p.counts.Syncs, OpSync, func() error { return s.inner.Sync(ctx) })
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(string) error) error {
	if err := s.p.read(&s.p.counts.Reads); err != nil {
		return err
	}
	ef, err := s.pre(ctx, OpList)
	if err != nil {
		return err
	}
	err = s.inner.List(ctx, prefix, func(name string) error {
		if s.p.match(s.inner, OpList, name).missing {
			return nil
		}
		return fn(name)
	})
	if err != nil {
		return err
	}
	return ef.post(nil)
}

// Close implements store.Store: the wrapper's calls fail with
// errs.ErrShutdown from now on. It does not close the inner store (an
// engine restarted over the same stores wraps them again).
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

func (s *Store) locker() store.Locker { return s.inner.(store.Locker) }

func (s *Store) lockCall(ctx context.Context, name string, call func() error) error {
	if err := s.p.read(&s.p.counts.Locks); err != nil {
		return err
	}
	ef, err := s.pre(ctx, OpLock, name)
	if err != nil {
		return err
	}
	if err := call(); err != nil {
		return err
	}
	return ef.post(nil)
}

// TryLock implements store.Locker.
func (s *Store) TryLock(ctx context.Context, name, owner string) error {
	return s.lockCall(ctx, name, func() error { return s.locker().TryLock(ctx, name, owner) })
}

// Unlock implements store.Locker.
func (s *Store) Unlock(ctx context.Context, name, owner string, force bool) error {
	return s.lockCall(ctx, name, func() error { return s.locker().Unlock(ctx, name, owner, force) })
}

// LockOwner implements store.Locker.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	var owner string
	err := s.lockCall(ctx, name, func() error {
		var err error
		owner, err = s.locker().LockOwner(ctx, name)
		return err
	})
	return owner, err
}

// Named matches the objects with one of names.
func Named(names ...string) func(string) bool {
	return func(n string) bool {
		for _, m := range names {
			if n == m {
				return true
			}
		}
		return false
	}
}

// Prefixed matches the objects whose names start with prefix.
func Prefixed(prefix string) func(string) bool {
	return func(n string) bool { return strings.HasPrefix(n, prefix) }
}

// FlipByte damages object name of s for good: the byte at off is XORed
// with mask (0 means 0xff) and written back with FUA. An offset past the
// object's end is an error wrapping errs.ErrInvalid.
func FlipByte(ctx context.Context, s store.Store, name string, off int64, mask byte) error {
	if mask == 0 {
		mask = 0xff
	}
	b := make([]byte, 1)
	n, err := s.ReadAt(ctx, name, b, off)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("faultstore: flip byte %d of object %q: past its end: %w", off, name, errs.ErrInvalid)
	}
	b[0] ^= mask
	return s.WriteAt(ctx, name, b, off, true)
}
