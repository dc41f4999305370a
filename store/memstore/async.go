package memstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// AsyncOptions configure NewAsync.
type AsyncOptions struct {
	// Workers is how many goroutines run the asynchronous operations
	// (default 4).
	Workers int
	// MaxDelay: a worker that takes an operation first waits a random
	// time below MaxDelay (0: no wait), as a disk or an OSD would, so
	// that operations in flight together end in a shuffled order.
	MaxDelay time.Duration
	// Seed seeds the choice of the next operation and the delays (0: a
	// random seed). Workers run in parallel, so a seed does not replay
	// an order exactly.
	Seed uint64
}

// Async is a Store that can also start a read or a write and report its
// end through a callback: the ability the blocker serves READ and WRITE
// with, which radosstore has with librados' aio (the interface of
// storetest.AsyncStore). It lets the blocker's asynchronous path run
// without Ceph.
//
// An operation started by ReadAsync or WriteAsync waits in a queue; each of
// AsyncOptions.Workers goroutines takes one at random from it (not the
// oldest), waits a random delay if AsyncOptions.MaxDelay says so, runs it
// against the memory store and calls its callback: operations in flight
// together end in another order than they started. The buffer is read
// (write) or filled (read) only then, so a caller that touches it before
// its callback sees the damage. A write is FUA: it is durable (it
// survives Crash) when its callback runs, as a RADOS write is when
// librados calls back. Hold stops the workers from taking operations
// until Release, so that a test can pile operations up and have them end
// in a shuffled order for sure.
//
// Every other method is the embedded Store's; Crash and Close are
// Async's own.
type Async struct {
	*Store
	opts AsyncOptions

	mu      sync.Mutex
	cond    *sync.Cond // signalled when queue, held or closing change
	queue   []*asyncOp // started, not yet taken by a worker
	held    bool
	closing bool
	rng     *rand.Rand
	ops     sync.WaitGroup // started and not yet called back
	workers sync.WaitGroup

	reads, writes atomic.Int64 // started
	inFlight      atomic.Int64 // started and not yet called back
}

type asyncOp struct {
	write bool
	name  string
	p     []byte
	off   int64
	read  func(n int, err error)
	wrote func(err error)
}

// NewAsync returns an empty asynchronous store. Close stops its workers.
func NewAsync(o AsyncOptions) *Async {
	return newAsync(New(), o)
}

func newAsync(s *Store, o AsyncOptions) *Async {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	a := &Async{Store: s, opts: o, rng: rand.New(rand.NewPCG(seed, 0xa5c))}
	a.cond = sync.NewCond(&a.mu)
	a.workers.Add(o.Workers)
	for range o.Workers {
		go a.work()
	}
	return a
}

// Crash simulates a power cut as Store.Crash does: the new Async, with
// the same options, holds only what was durable in a, every write whose
// callback has run included. Operations still in flight in a go on
// against a, not the new store.
func (a *Async) Crash() *Async {
	return newAsync(a.Store.Crash(), a.opts)
}

// Close refuses new operations, waits for those in flight (releasing a
// Hold) to end and their callbacks to return, stops the workers and
// closes the memory store. A callback must not call Close.
func (a *Async) Close() error {
	a.mu.Lock()
	already := a.closing
	a.closing = true
	a.held = false
	a.cond.Broadcast()
	a.mu.Unlock()
	if !already {
		a.ops.Wait()
		a.workers.Wait()
	}
	return a.Store.Close()
}

// Hold stops the workers from taking operations: those started from now
// on wait until Release (or Close). Operations a worker took already end
// as usual.
func (a *Async) Hold() {
	a.mu.Lock()
	a.held = true
	a.mu.Unlock()
}

// Release lets the workers take the operations again, in random order.
func (a *Async) Release() {
	a.mu.Lock()
	a.held = false
	a.cond.Broadcast()
	a.mu.Unlock()
}

// Queued is how many operations wait for a worker (all those started
// since Hold, while held).
func (a *Async) Queued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.queue)
}

// InFlight is how many operations have started and not yet been called
// back.
func (a *Async) InFlight() int { return int(a.inFlight.Load()) }

// Started is how many reads and writes ReadAsync and WriteAsync accepted
// since NewAsync (or the Crash that made a).
func (a *Async) Started() (reads, writes int64) { return a.reads.Load(), a.writes.Load() }

// ReadAsync reads into p at off of name and calls done with how many bytes
// came from the object (as ReadAt) or the error (ErrNotFound for a
// missing object). done runs on a worker goroutine, after ReadAsync
// returned or not; p must stay untouched until then. An error returned
// (a bad name or range, an empty p, a closed store) means done is never
// called.
func (a *Async) ReadAsync(name string, p []byte, off int64, done func(n int, err error)) error {
	return a.start(&asyncOp{name: name, p: p, off: off, read: done})
}

// WriteAsync writes p at off of name, creating the object, and calls done
// when the data and the object are durable (a FUA write) or with the
// error; as ReadAsync otherwise.
func (a *Async) WriteAsync(name string, p []byte, off int64, done func(err error)) error {
	return a.start(&asyncOp{write: true, name: name, p: p, off: off, wrote: done})
}

func (a *Async) start(op *asyncOp) error {
	what := "read"
	if op.write {
		what = "write"
	}
	if err := store.ValidName(op.name); err != nil {
		return fmt.Errorf("memstore: async %s: %w", what, err)
	}
	if err := store.ValidRange(op.off, len(op.p)); err != nil {
		return fmt.Errorf("memstore: async %s object %q: %w", what, op.name, err)
	}
	if len(op.p) == 0 {
		return fmt.Errorf("memstore: async %s object %q: no bytes: %w", what, op.name, errs.ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return fmt.Errorf("memstore: async %s object %q: store closed: %w", what, op.name, errs.ErrShutdown)
	}
	a.ops.Add(1)
	a.inFlight.Add(1)
	if op.write {
		a.writes.Add(1)
	} else {
		a.reads.Add(1)
	}
	a.queue = append(a.queue, op)
	a.cond.Signal()
	return nil
}

// work runs operations, each picked at random from the queue, until Close.
func (a *Async) work() {
	defer a.workers.Done()
	for {
		a.mu.Lock()
		for !a.closing && (a.held || len(a.queue) == 0) {
			a.cond.Wait()
		}
		if len(a.queue) == 0 { // closing, nothing left
			a.mu.Unlock()
			return
		}
		i := a.rng.IntN(len(a.queue))
		op := a.queue[i]
		last := len(a.queue) - 1
		a.queue[i] = a.queue[last]
		a.queue[last] = nil
		a.queue = a.queue[:last]
		var delay time.Duration
		if a.opts.MaxDelay > 0 && !a.closing {
			delay = time.Duration(a.rng.Int64N(int64(a.opts.MaxDelay)))
		}
		a.mu.Unlock()
		if delay > 0 {
			time.Sleep(delay)
		}
		a.run(op)
	}
}

// run does one operation against the memory store and calls it back.
func (a *Async) run(op *asyncOp) {
	defer a.ops.Done()
	ctx := context.Background()
	if op.write {
		err := a.Store.WriteAt(ctx, op.name, op.p, op.off, true)
		a.inFlight.Add(-1)
		op.wrote(err)
		return
	}
	n, err := a.Store.ReadAt(ctx, op.name, op.p, op.off)
	a.inFlight.Add(-1)
	op.read(n, err)
}
