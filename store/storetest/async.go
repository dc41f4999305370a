package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// AsyncStore is a store that can also start a read or a write and report
// its end through a callback, with no goroutine waiting per operation:
// the ability the blocker serves READ and WRITE with (its unexported
// asyncStore has these two methods; radosstore has it with librados' aio,
// memstore.Async in memory). The contract, which RunAsync checks:
//
//   - ReadAsync reads up to len(p) bytes of name at off into p and reports
//     how many came from the object, as ReadAt does (fewer at the end of
//     the object, 0 past it; ErrNotFound if the object is missing).
//     WriteAsync writes p at off, creating the object (a gap reads as
//     zeros), and reports success only when the data and the object's
//     existence are on stable storage, as a FUA WriteAt.
//   - Either the call returns an error and done is never called, or it
//     returns nil and done is called exactly once, on a goroutine of the
//     store, possibly before the call returns. A bad name or range and an
//     empty p fail with ErrInvalid, a closed store with ErrShutdown
//     (returned, or through done).
//   - p belongs to the store until done is called: the caller must not
//     touch it before, and the store does not touch it after.
//   - done must not block; it may call the store, and start more
//     asynchronous operations. Close waits until every done has returned.
type AsyncStore interface {
	store.Store
	ReadAsync(name string, p []byte, off int64, done func(n int, err error)) error
	WriteAsync(name string, p []byte, off int64, done func(err error)) error
}

// RunAsync checks the AsyncStore contract, but for durability (see
// RunAsyncCrash). open must return a new, empty store for each sub-test.
func RunAsync[S AsyncStore](t *testing.T, open func(t *testing.T) S) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s AsyncStore)
	}{
		{"WriteRead", testAsyncWriteRead},
		{"Buffers", testAsyncBuffers},
		{"NotFound", testAsyncNotFound},
		{"Invalid", testAsyncInvalid},
		{"Concurrent", testAsyncConcurrent},
		{"FromCallback", testAsyncFromCallback},
		{"Closed", testAsyncClosed},
		{"CloseWaits", testAsyncCloseWaits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, openStore(t, open))
		})
	}
}

// AsyncCrashable is an AsyncStore that can simulate a power cut
// (CrashableStore).
type AsyncCrashable[S any] interface {
	AsyncStore
	Crash() S
}

// RunAsyncCrash checks that a write reported done by WriteAsync is
// durable at once, with no Sync: a crash taken from its callback keeps it.
func RunAsyncCrash[S AsyncCrashable[S]](t *testing.T, open func(t *testing.T) S) {
	t.Run("DurableWhenDone", func(t *testing.T) { testAsyncDurable(t, openStore(t, open)) })
}

// asyncOp is one asynchronous call: its result, however it came.
type asyncOp struct {
	what  string
	res   chan asyncResult // one result: the error returned, or done's
	calls atomic.Int32     // calls of done
	// refused is set when the call returned an error: done must never
	// be called then.
	refused atomic.Bool
}

type asyncResult struct {
	n   int
	err error
}

func newAsyncOp(what string) *asyncOp {
	return &asyncOp{what: what, res: make(chan asyncResult, 2)}
}

// called records a call of done.
func (o *asyncOp) called(t *testing.T, r asyncResult) {
	switch n := o.calls.Add(1); {
	case n > 1:
		t.Errorf("%s: done called %d times", o.what, n)
	case o.refused.Load():
		t.Errorf("%s: done called after the call returned an error", o.what)
	default:
		o.res <- r
	}
}

// returned records what the call returned.
func (o *asyncOp) returned(t *testing.T, err error) {
	if err == nil {
		return
	}
	o.refused.Store(true)
	if o.calls.Load() > 0 {
		t.Errorf("%s: the call returned %v after calling done", o.what, err)
	}
	o.res <- asyncResult{err: err}
}

// wait returns the operation's result. A store that never reports one
// fails t after a minute rather than hang the suite.
func (o *asyncOp) wait(t *testing.T) asyncResult {
	t.Helper()
	select {
	case r := <-o.res:
		return r
	case <-time.After(time.Minute):
		t.Fatalf("%s: no result after a minute", o.what)
		return asyncResult{}
	}
}

func readAsync(t *testing.T, s AsyncStore, name string, p []byte, off int64) *asyncOp {
	o := newAsyncOp(fmt.Sprintf("ReadAsync(%q, %d bytes, %d)", name, len(p), off))
	o.returned(t, s.ReadAsync(name, p, off, func(n int, err error) { o.called(t, asyncResult{n, err}) }))
	return o
}

func writeAsync(t *testing.T, s AsyncStore, name string, p []byte, off int64) *asyncOp {
	o := newAsyncOp(fmt.Sprintf("WriteAsync(%q, %d bytes, %d)", name, len(p), off))
	o.returned(t, s.WriteAsync(name, p, off, func(err error) { o.called(t, asyncResult{err: err}) }))
	return o
}

// awrite writes with WriteAsync and waits; t fails on an error.
func awrite(t *testing.T, s AsyncStore, name string, p []byte, off int64) {
	t.Helper()
	if r := writeAsync(t, s, name, p, off).wait(t); r.err != nil {
		t.Fatalf("WriteAsync(%q, %d bytes, %d): %v", name, len(p), off, r.err)
	}
}

// aread reads n bytes at off with ReadAsync and returns those that came
// from the object; t fails on an error.
func aread(t *testing.T, s AsyncStore, name string, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	r := readAsync(t, s, name, p, off).wait(t)
	if r.err != nil {
		t.Fatalf("ReadAsync(%q, %d bytes, %d): %v", name, n, off, r.err)
	}
	if r.n < 0 || r.n > n {
		t.Fatalf("ReadAsync(%q, %d bytes, %d) = %d, out of range", name, n, off, r.n)
	}
	return p[:r.n]
}

func testAsyncWriteRead(t *testing.T, s AsyncStore) {
	data := pattern(1, 10000)
	awrite(t, s, "a", data, 0)
	wantContent(t, s, "a", data)
	if got := aread(t, s, "a", 0, len(data)); !bytes.Equal(got, data) {
		t.Fatalf("ReadAsync of what WriteAsync wrote: %s", diff(got, data))
	}
	// An overwrite in the middle, read across it.
	awrite(t, s, "a", pattern(2, 100), 50)
	want := bytes.Clone(data)
	copy(want[50:], pattern(2, 100))
	if got := aread(t, s, "a", 40, 200); !bytes.Equal(got, want[40:240]) {
		t.Fatalf("ReadAsync across an overwrite: %s", diff(got, want[40:240]))
	}
	// What WriteAt wrote, read short at the end and past it.
	write(t, s, "b", []byte("hello"), 100, false)
	if got := aread(t, s, "b", 0, 200); !bytes.Equal(got, append(make([]byte, 100), "hello"...)) {
		t.Fatalf("ReadAsync of a hole then data, short at the end: %q", got)
	}
	if got := aread(t, s, "b", 105, 10); len(got) != 0 {
		t.Errorf("ReadAsync at the end of the object: %d bytes, want 0", len(got))
	}
	if got := aread(t, s, "b", 4000, 10); len(got) != 0 {
		t.Errorf("ReadAsync past the end of the object: %d bytes, want 0", len(got))
	}
	// A write past the end leaves a gap of zeros.
	awrite(t, s, "c", []byte("x"), 5000)
	wantContent(t, s, "c", append(make([]byte, 5000), 'x'))
}

// testAsyncBuffers: the buffer is the store's until done and no longer.
func testAsyncBuffers(t *testing.T, s AsyncStore) {
	p := bytes.Clone(pattern(3, 4096))
	awrite(t, s, "obj", p, 0)
	clear(p) // after done: must not reach the object
	wantContent(t, s, "obj", pattern(3, 4096))

	q := make([]byte, 4096)
	r := readAsync(t, s, "obj", q, 0).wait(t)
	if r.err != nil || r.n != len(q) {
		t.Fatalf("ReadAsync: n=%d, %v", r.n, r.err)
	}
	got := bytes.Clone(q)
	write(t, s, "obj", make([]byte, 4096), 0, false) // after done: must not reach q
	if !bytes.Equal(q, got) || !bytes.Equal(got, pattern(3, 4096)) {
		t.Fatal("the read's buffer changed after done, or did not hold the data when done was called")
	}
}

func testAsyncNotFound(t *testing.T, s AsyncStore) {
	r := readAsync(t, s, "missing", make([]byte, 10), 0).wait(t)
	wantErr(t, "ReadAsync of a missing object", r.err, errs.ErrNotFound)
	awrite(t, s, "gone", []byte("x"), 0)
	if err := s.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	r = readAsync(t, s, "gone", make([]byte, 10), 0).wait(t)
	wantErr(t, "ReadAsync of a deleted object", r.err, errs.ErrNotFound)
}

func testAsyncInvalid(t *testing.T, s AsyncStore) {
	for _, name := range []string{"", "a/b", ".", "..", "nul\x00", strings.Repeat("n", store.MaxNameLen+1)} {
		r := readAsync(t, s, name, make([]byte, 1), 0).wait(t)
		wantErr(t, fmt.Sprintf("ReadAsync(%.20q)", name), r.err, errs.ErrInvalid)
		r = writeAsync(t, s, name, []byte("x"), 0).wait(t)
		wantErr(t, fmt.Sprintf("WriteAsync(%.20q)", name), r.err, errs.ErrInvalid)
	}
	for _, c := range []struct {
		off int64
		n   int
	}{{-1, 1}, {math.MaxInt64 - 3, 10}, {0, 0}} {
		r := readAsync(t, s, "obj", make([]byte, c.n), c.off).wait(t)
		wantErr(t, fmt.Sprintf("ReadAsync of %d bytes at %d", c.n, c.off), r.err, errs.ErrInvalid)
		r = writeAsync(t, s, "obj", make([]byte, c.n), c.off).wait(t)
		wantErr(t, fmt.Sprintf("WriteAsync of %d bytes at %d", c.n, c.off), r.err, errs.ErrInvalid)
	}
	if names := list(t, s, ""); len(names) != 0 {
		t.Errorf("refused writes left objects: %q", names)
	}
}

// testAsyncConcurrent starts many writes, then many reads, all in flight
// together, on disjoint ranges of a few objects; run it with -race.
func testAsyncConcurrent(t *testing.T, s AsyncStore) {
	const (
		objects = 8
		chunks  = 16
		chunk   = 4096
	)
	name := func(o int) string { return fmt.Sprintf("obj%02d", o) }
	seed := func(o, c int) uint64 { return uint64(o*chunks + c) }
	var ops []*asyncOp
	for c := range chunks { // interleaved, so that objects grow out of order
		for o := range objects {
			ops = append(ops, writeAsync(t, s, name(o), pattern(seed(o, c), chunk), int64(c*chunk)))
		}
	}
	for _, op := range ops {
		if r := op.wait(t); r.err != nil {
			t.Fatalf("%s: %v", op.what, r.err)
		}
	}
	ops = ops[:0]
	bufs := make([][]byte, 0, objects*chunks)
	for o := range objects {
		for c := range chunks {
			p := make([]byte, chunk)
			bufs = append(bufs, p)
			ops = append(ops, readAsync(t, s, name(o), p, int64(c*chunk)))
		}
	}
	for i, op := range ops {
		o, c := i/chunks, i%chunks
		r := op.wait(t)
		if r.err != nil || r.n != chunk {
			t.Fatalf("%s: n=%d, %v", op.what, r.n, r.err)
		}
		if want := pattern(seed(o, c), chunk); !bytes.Equal(bufs[i], want) {
			t.Fatalf("%s: %s", op.what, diff(bufs[i], want))
		}
	}
	for o := range objects {
		var want []byte
		for c := range chunks {
			want = append(want, pattern(seed(o, c), chunk)...)
		}
		wantContent(t, s, name(o), want)
	}
}

// testAsyncFromCallback: a callback may call the store and start the next
// operation, as a caller that answers from it does.
func testAsyncFromCallback(t *testing.T, s AsyncStore) {
	const steps = 32
	end := make(chan error, 1)
	var step func(i int)
	step = func(i int) {
		if i == steps {
			end <- nil
			return
		}
		err := s.WriteAsync("chain", pattern(uint64(i), 512), int64(i*512), func(err error) {
			if err == nil {
				var size int64
				size, err = s.Stat(t.Context(), "chain")
				if err == nil && size != int64((i+1)*512) {
					err = fmt.Errorf("Stat after write %d in its callback = %d, want %d", i, size, (i+1)*512)
				}
			}
			if err != nil {
				end <- fmt.Errorf("write %d: %w", i, err)
				return
			}
			step(i + 1)
		})
		if err != nil {
			end <- fmt.Errorf("write %d from the callback of the one before: %w", i, err)
		}
	}
	step(0)
	select {
	case err := <-end:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a chain of writes started from callbacks did not end in a minute")
	}
	var want []byte
	for i := range steps {
		want = append(want, pattern(uint64(i), 512)...)
	}
	wantContent(t, s, "chain", want)
}

func testAsyncClosed(t *testing.T, s AsyncStore) {
	awrite(t, s, "obj", []byte("x"), 0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := readAsync(t, s, "obj", make([]byte, 1), 0).wait(t)
	wantErr(t, "ReadAsync after Close", r.err, errs.ErrShutdown)
	r = writeAsync(t, s, "obj", []byte("y"), 0).wait(t)
	wantErr(t, "WriteAsync after Close", r.err, errs.ErrShutdown)
}

// testAsyncCloseWaits: Close returns only when the callback of every
// operation it found in flight has returned.
func testAsyncCloseWaits(t *testing.T, s AsyncStore) {
	const n = 64
	var returned atomic.Int32
	var mu sync.Mutex
	var failed []error
	for i := range n {
		p := pattern(uint64(i), 4096)
		err := s.WriteAsync(fmt.Sprintf("obj%02d", i), p, 0, func(err error) {
			// A little work in the callback, to be waited for.
			if err != nil && !errors.Is(err, errs.ErrShutdown) {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
			returned.Add(1)
		})
		if err != nil {
			t.Fatalf("WriteAsync %d: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := returned.Load(); got != n {
		t.Errorf("Close returned with %d of %d callbacks run", got, n)
	}
	for _, err := range failed {
		t.Errorf("a write in flight at Close: %v (want success or ErrShutdown)", err)
	}
}

// testAsyncDurable: a crash taken in the callback of a write keeps it,
// the object's existence included, with no Sync; and the write's buffer
// held its data until then.
func testAsyncDurable[S AsyncCrashable[S]](t *testing.T, s S) {
	ctx := t.Context()
	write(t, s, "old", pattern(1, 8192), 0, false)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	type crashed struct {
		name string
		c    S
	}
	cs := make(chan crashed, 3)
	start := func(name string, p []byte, off int64) {
		if err := s.WriteAsync(name, p, off, func(err error) {
			if err != nil {
				t.Errorf("WriteAsync(%q): %v", name, err)
			}
			cs <- crashed{name, s.Crash()}
		}); err != nil {
			t.Fatalf("WriteAsync(%q): %v", name, err)
		}
	}
	start("old", pattern(2, 4096), 2048) // an overwrite of synced data
	start("new", pattern(3, 4096), 1000) // a new object, past a gap
	start("old2", pattern(4, 100), 0)    // another new one
	want := map[string][]byte{
		"old":  append(append(pattern(1, 8192)[:2048:2048], pattern(2, 4096)...), pattern(1, 8192)[6144:]...),
		"new":  append(make([]byte, 1000), pattern(3, 4096)...),
		"old2": pattern(4, 100),
	}
	for range 3 {
		var c crashed
		select {
		case c = <-cs:
		case <-time.After(time.Minute):
			t.Fatal("a write was not called back in a minute")
		}
		c.c = openStore(t, func(*testing.T) S { return c.c })
		wantContent(t, c.c, c.name, want[c.name])
		// The synced object is there, overwritten or not yet.
		if got := readAll(t, c.c, "old"); !bytes.Equal(got, pattern(1, 8192)) && !bytes.Equal(got, want["old"]) {
			t.Errorf("after a crash in the callback of the write of %q, the synced object %q holds neither its old nor its new content", c.name, "old")
		}
	}
}
