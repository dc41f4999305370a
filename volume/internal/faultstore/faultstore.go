// Package faultstore wraps a store.Store (and its store.Locker) to count
// calls and to inject a failure or a crash at a chosen mutating call, for
// the volume engine's tests and benchmarks.
//
// Mutating calls (WriteAt, Copy, Truncate, Delete, Sync) of every Store
// that shares one Plan are numbered from 0 in the order they start. At the
// armed index the Plan either fails the call (Fail: it does nothing and
// returns an error; FailAfter: it is done but reports an error) or crashes:
// the call and every later call of every Store on the Plan fail and reach
// nothing, as if the process died. A crash at a FUA write may first
// persist a torn prefix of it (Plan.Torn), as a power cut can. Lock calls
// are never an index, but fail after a crash.
package faultstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"

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

// Disarm stops injecting; a crash stays a crash.
func (p *Plan) Disarm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at = -1
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

// Store is a faulty view of an inner store.
type Store struct {
	inner store.Store
	p     *Plan
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Locker = (*Store)(nil)
)

// Wrap returns s seen through p. Locker calls go to s, which must
// implement store.Locker if they are used.
func Wrap(s store.Store, p *Plan) *Store { return &Store{inner: s, p: p} }

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
	return s.inner.ReadAt(ctx, name, b, off)
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
	case failAfter:
		if err := s.inner.WriteAt(ctx, name, b, off, fua); err != nil {
			return err
		}
		return ErrInjected
	}
	return s.inner.WriteAt(ctx, name, b, off, fua)
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := s.p.read(&s.p.counts.Stats); err != nil {
		return 0, err
	}
	return s.inner.Stat(ctx, name)
}

// Truncate implements store.Store.
func (s *Store) Truncate(ctx context.Context, name string, size int64) error {
	return s.do(&s.p.counts.Truncates, func() error { return s.inner.Truncate(ctx, name, size) })
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	return s.do(&s.p.counts.Deletes, func() error { return s.inner.Delete(ctx, name) })
}

// Copy implements store.Store.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	return s.do(&s.p.counts.Copies, func() error { return s.inner.Copy(ctx, src, dst) })
}

// Sync implements store.Store.
func (s *Store) Sync(ctx context.Context) error {
	return s.do(&s.p.counts.Syncs, func() error { return s.inner.Sync(ctx) })
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(string) error) error {
	if err := s.p.read(&s.p.counts.Reads); err != nil {
		return err
	}
	return s.inner.List(ctx, prefix, fn)
}

// Close implements store.Store; it does not close the inner store.
func (s *Store) Close() error { return nil }

func (s *Store) locker() store.Locker { return s.inner.(store.Locker) }

// TryLock implements store.Locker.
func (s *Store) TryLock(ctx context.Context, name, owner string) error {
	if err := s.p.read(&s.p.counts.Locks); err != nil {
		return err
	}
	return s.locker().TryLock(ctx, name, owner)
}

// Unlock implements store.Locker.
func (s *Store) Unlock(ctx context.Context, name, owner string, force bool) error {
	if err := s.p.read(&s.p.counts.Locks); err != nil {
		return err
	}
	return s.locker().Unlock(ctx, name, owner, force)
}

// LockOwner implements store.Locker.
func (s *Store) LockOwner(ctx context.Context, name string) (string, error) {
	if err := s.p.read(&s.p.counts.Locks); err != nil {
		return "", err
	}
	return s.locker().LockOwner(ctx, name)
}
