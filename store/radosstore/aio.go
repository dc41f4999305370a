//go:build ceph

package radosstore

// Asynchronous reads and writes with librados' aio calls: the blocker
// answers a READ or WRITE from the completion, so no thread waits per
// operation in flight (synchronous calls cost radosd a blocked thread and
// two wake-ups per request), but for one alone if asked (below).
//
// Completions do not call into Go from librados' threads. A cgo callback
// from a C thread costs the Go runtime a P in "syscall" state after every
// return, which sysmon must then retake: profiles of radosd showed sysmon
// polling every 20 µs and handing Ps off, a third of radosd's own CPU.
// Instead the C callback appends (slot, result) to a queue in C memory and
// writes to an eventfd only when the Go side said it is about to sleep;
// one goroutine waits on the eventfd through the Go poller, drains the
// queue in batches with one short cgo call, and runs the callbacks.
//
// That costs every completion a hand-off between threads that one alone
// need not pay: librados runs completion callbacks on a thread of its own
// (an asio strand), woken by the messenger thread that read the reply,
// which then rings the eventfd. With ARCHIPELAGO_RADOS_DIRECT_WAIT=1, an
// operation started when no other is in flight (a client at depth 1)
// has no callback: a goroutine of its own waits for it in
// rados_aio_wait_for_complete, which the messenger thread wakes directly
// (not with GOMAXPROCS=1: the goroutine holds its processor while it
// waits). With more in flight, each would hold a thread in a cgo call:
// they queue as above, and one wake-up drains many. It is not the
// default: 4 KiB reads at depth 1 on the aio path alone (BenchmarkLayers)
// took 9.6-11.5 -> 7.7-8.5 context switches and about a fifth less CPU,
// but through a radosd process of its own, whose port loop sleeps in a
// system call holding its Go processor while the waiter holds the
// other, 2 rounds of 3 took 8.2-8.4 -> 11.7-11.9 switches and 136-168 ->
// 226-246 µs of CPU per read (sysmon taking the processors back).

/*
#cgo LDFLAGS: -lrados
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <rados/librados.h>

typedef struct {
	uint32_t slot;
	int32_t  ret;
} ar_done;

typedef struct {
	pthread_mutex_t mu;
	ar_done *q;      // completions not yet drained
	size_t n, cap;
	int sleeping;    // the Go side waits on efd: wake it
	int efd;
} ar_queue;

typedef struct {
	ar_queue *q;
	uint32_t slot;
} ar_arg;

static ar_queue *ar_queue_new(int efd) {
	ar_queue *q = calloc(1, sizeof *q);
	if (q == NULL) {
		return NULL;
	}
	pthread_mutex_init(&q->mu, NULL);
	q->efd = efd;
	return q;
}

static void ar_queue_free(ar_queue *q) {
	pthread_mutex_destroy(&q->mu);
	free(q->q);
	free(q);
}

static void ar_push(ar_queue *q, uint32_t slot, int32_t ret) {
	int wake = 0;
	pthread_mutex_lock(&q->mu);
	if (q->n == q->cap) {
		size_t cap = q->cap ? 2 * q->cap : 64;
		ar_done *nq = realloc(q->q, cap * sizeof *nq);
		if (nq == NULL) {
			// Out of memory: nothing sane is left to do; abort as
			// malloc failures do elsewhere in librados.
			abort();
		}
		q->q = nq;
		q->cap = cap;
	}
	q->q[q->n++] = (ar_done){slot, ret};
	if (q->sleeping) {
		q->sleeping = 0;
		wake = 1;
	}
	pthread_mutex_unlock(&q->mu);
	if (wake) {
		uint64_t one = 1;
		while (write(q->efd, &one, sizeof one) < 0 && errno == EINTR) {
		}
	}
}

// ar_drain moves up to max completions to out and returns their number.
// With none, it marks the Go side as sleeping (the next push writes to
// the eventfd) and returns 0.
static size_t ar_drain(ar_queue *q, ar_done *out, size_t max) {
	pthread_mutex_lock(&q->mu);
	size_t n = q->n < max ? q->n : max;
	for (size_t i = 0; i < n; i++) {
		out[i] = q->q[i];
	}
	for (size_t i = n; i < q->n; i++) {
		q->q[i - n] = q->q[i];
	}
	q->n -= n;
	if (n == 0) {
		q->sleeping = 1;
	}
	pthread_mutex_unlock(&q->mu);
	return n;
}

// ar_start starts a read (write == 0) or a write as ar_aio does, with a
// completion that has no callback, and stores it in *cp for ar_wait.
static int ar_start(void *io, const char *name, size_t nlen, char *buf, size_t len, uint64_t off, int write, rados_completion_t *cp) {
	char oid[nlen + 1];
	for (size_t i = 0; i < nlen; i++) {
		oid[i] = name[i];
	}
	oid[nlen] = 0;
	int r = rados_aio_create_completion2(NULL, NULL, cp);
	if (r < 0) {
		return r;
	}
	if (write) {
		r = rados_aio_write((rados_ioctx_t)io, oid, *cp, buf, len, off);
	} else {
		r = rados_aio_read((rados_ioctx_t)io, oid, *cp, buf, len, off);
	}
	if (r < 0) {
		rados_aio_release(*cp);
	}
	return r;
}

// ar_wait waits for an operation of ar_start, releases its completion and
// returns its result. librados sets the result and fills a read's buffer
// under the completion's lock, which the wait takes back before it
// returns: the buffer is done with when this returns.
static int ar_wait(rados_completion_t c) {
	rados_aio_wait_for_complete(c);
	int r = rados_aio_get_return_value(c);
	rados_aio_release(c);
	return r;
}

static void ar_aio_cb(rados_completion_t c, void *arg) {
	ar_arg a = *(ar_arg *)arg;
	free(arg);
	int ret = rados_aio_get_return_value(c);
	rados_aio_release(c);
	ar_push(a.q, a.slot, ret);
}

// ar_aio starts a read (write == 0) or a write of len bytes at buf, at off
// of oid (nlen bytes, not terminated). buf must stay valid until the
// completion; oid is copied.
static int ar_aio(void *io, ar_queue *q, uint32_t slot, const char *name, size_t nlen, char *buf, size_t len, uint64_t off, int write) {
	char oid[nlen + 1];
	for (size_t i = 0; i < nlen; i++) {
		oid[i] = name[i];
	}
	oid[nlen] = 0;
	ar_arg *a = malloc(sizeof *a);
	if (a == NULL) {
		return -ENOMEM;
	}
	a->q = q;
	a->slot = slot;
	rados_completion_t c;
	int r = rados_aio_create_completion2(a, ar_aio_cb, &c);
	if (r < 0) {
		free(a);
		return r;
	}
	if (write) {
		r = rados_aio_write((rados_ioctx_t)io, oid, c, buf, len, off);
	} else {
		r = rados_aio_read((rados_ioctx_t)io, oid, c, buf, len, off);
	}
	if (r < 0) {
		rados_aio_release(c);
		free(a);
	}
	return r;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// drainBatch is how many completions one cgo call takes at most.
const drainBatch = 256

// completions is a store's queue of aio completions and the callbacks
// waiting for them, by slot.
type completions struct {
	q   *C.ar_queue
	efd *os.File // the eventfd the C side writes when the drainer sleeps

	// inflight counts the operations started and not yet called back.
	// One started with fewer than directBelow in flight waits on a
	// goroutine of its own instead of the queue: default 0 (never);
	// ARCHIPELAGO_RADOS_DIRECT_WAIT=1 makes it 1 (when it is alone).
	inflight    atomic.Int32
	directBelow int32

	mu    sync.Mutex
	slots []func(int) // callback by slot; nil: free
	free  []uint32    // free slots
	done  chan struct{}
}

func newCompletions() (*completions, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("radosstore: eventfd: %w", err)
	}
	q := C.ar_queue_new(C.int(fd))
	if q == nil {
		unix.Close(fd)
		return nil, fmt.Errorf("radosstore: completion queue: out of memory")
	}
	// A non-blocking descriptor: os.NewFile puts it in the Go poller, so
	// the drainer's wait parks a goroutine, not a thread.
	c := &completions{q: q, efd: os.NewFile(uintptr(fd), "radosstore-aio"), done: make(chan struct{})}
	if os.Getenv("ARCHIPELAGO_RADOS_DIRECT_WAIT") == "1" {
		c.directBelow = 1
	}
	go c.drain()
	return c, nil
}

// add registers fn and returns its slot.
func (c *completions) add(fn func(int)) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.free); n > 0 {
		slot := c.free[n-1]
		c.free = c.free[:n-1]
		c.slots[slot] = fn
		return slot
	}
	c.slots = append(c.slots, fn)
	return uint32(len(c.slots) - 1)
}

// take frees slot and returns its callback.
func (c *completions) take(slot uint32) func(int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn := c.slots[slot]
	c.slots[slot] = nil
	c.free = append(c.free, slot)
	return fn
}

// drain runs callbacks as completions arrive, until the eventfd is closed.
func (c *completions) drain() {
	defer close(c.done)
	var batch [drainBatch]C.ar_done
	var word [8]byte
	for {
		n := int(C.ar_drain(c.q, &batch[0], drainBatch))
		if n == 0 {
			if _, err := c.efd.Read(word[:]); err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				// EAGAIN is absorbed by the poller; anything else would
				// be a broken eventfd: drain again rather than stall.
			}
			continue
		}
		for _, d := range batch[:n] {
			fn := c.take(uint32(d.slot))
			c.inflight.Add(-1) // before: fn may start the next one
			fn(int(d.ret))
		}
	}
}

// close stops the drainer; every operation must have completed.
func (c *completions) close() {
	c.efd.Close()
	<-c.done
	C.ar_queue_free(c.q)
}

// aio starts one operation; done gets librados' return value.
func (s *Store) aio(op, name string, p []byte, off int64, write bool, done func(ret int)) error {
	if err := store.ValidRange(off, len(p)); err != nil {
		return fmt.Errorf("radosstore: %s %q: %w", op, name, err)
	}
	if len(p) == 0 {
		return fmt.Errorf("radosstore: %s %q: no bytes: %w", op, name, errs.ErrInvalid)
	}
	if err := s.enterName(context.Background(), op, name); err != nil {
		return err
	}
	w := C.int(0)
	if write {
		w = 1
	}
	// The waiting goroutine holds its Go processor in the cgo call until
	// sysmon takes it back: with only one, everything else would wait
	// for that.
	if s.comp.inflight.Add(1) <= s.comp.directBelow && runtime.GOMAXPROCS(0) > 1 {
		var comp C.rados_completion_t
		ret := C.ar_start(s.io.Pointer(),
			(*C.char)(unsafe.Pointer(unsafe.StringData(name))), C.size_t(len(name)),
			(*C.char)(unsafe.Pointer(unsafe.SliceData(p))), C.size_t(len(p)), C.uint64_t(off), w, &comp)
		if ret < 0 {
			s.comp.inflight.Add(-1)
			s.ops.Done()
			return opErr(op, name, errnoError(ret))
		}
		go func() {
			defer s.ops.Done()
			ret := int(C.ar_wait(comp))
			s.comp.inflight.Add(-1) // before: done may start the next one
			done(ret)
		}()
		return nil
	}
	slot := s.comp.add(func(ret int) {
		defer s.ops.Done()
		done(ret)
	})
	ret := C.ar_aio(s.io.Pointer(), s.comp.q, C.uint32_t(slot),
		(*C.char)(unsafe.Pointer(unsafe.StringData(name))), C.size_t(len(name)),
		(*C.char)(unsafe.Pointer(unsafe.SliceData(p))), C.size_t(len(p)), C.uint64_t(off), w)
	if ret < 0 {
		s.comp.take(slot)
		s.comp.inflight.Add(-1)
		s.ops.Done()
		return opErr(op, name, errnoError(ret))
	}
	return nil
}

// ReadAsync reads into p at off of name and calls done with the bytes that
// came from the object (as ReadAt) or the error. p must stay untouched
// until then and must not move: a segment buffer, or pinned Go memory.
// done runs on the store's completion goroutine: it must not block.
func (s *Store) ReadAsync(name string, p []byte, off int64, done func(n int, err error)) error {
	return s.aio("read", name, p, off, false, func(ret int) {
		if ret < 0 {
			done(0, opErr("read", name, errnoError(ret)))
			return
		}
		done(ret, nil)
	})
}

// WriteAsync writes p at off of name and calls done when it is on stable
// storage (done as in ReadAsync).
func (s *Store) WriteAsync(name string, p []byte, off int64, done func(err error)) error {
	return s.aio("write", name, p, off, true, func(ret int) {
		if ret < 0 {
			done(opErr("write", name, errnoError(ret)))
			return
		}
		done(nil)
	})
}
