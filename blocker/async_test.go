package blocker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// The blocker's asynchronous path (READ and WRITE started from the port's
// loop and answered from the store's callback, peer.AsyncHandler) checked
// without Ceph: the blocker serves a memstore.Async, whose operations end
// on its own goroutines, after random delays and in shuffled order, and
// which can hold them back (Hold) so that a test sees what is answered
// before the store called back.

// asyncBlocker is a blocker peer over st on port 1 of a new segment, in
// this process, and a client for it.
type asyncBlocker struct {
	*filed
	st   *memstore.Async
	p    *peer.Peer
	stop func() // stops p, once
}

func startAsyncBlocker(t *testing.T, st *memstore.Async) *asyncBlocker {
	t.Helper()
	s := newSegment(t, "blockerasync", 32)
	// Cleanups run last first: let go of what a failed test held back,
	// stop the peer, close the store (its operations end in the
	// segment's buffers), then remove the segment.
	t.Cleanup(func() { st.Close() })
	p, err := peer.Start(peer.Options{
		Role: "blocker-async-test", Segment: s.Name(), PortStart: filedPort, PortEnd: filedPort,
		NrOps: 64, NrThreads: 2, Logger: slog.New(slog.DiscardHandler),
	}, blocker.New(st, "test-ident"))
	if err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(p.Stop)
	t.Cleanup(stop)
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Cleanup(st.Release)
	return &asyncBlocker{filed: &filed{t: t, seg: s, c: c}, st: st, p: p, stop: stop}
}

func newAsyncStore(t *testing.T, maxDelay time.Duration) *memstore.Async {
	st := memstore.NewAsync(memstore.AsyncOptions{Workers: 4, MaxDelay: maxDelay})
	t.Cleanup(func() { st.Close() })
	return st
}

// sendAsync sends q from a goroutine and returns where its answer comes.
func (f *filed) sendAsync(q req) <-chan reply {
	answer := make(chan reply, 1)
	go func() {
		rep, err := f.send(context.Background(), q)
		if err != nil {
			rep.err = fmt.Errorf("transport: %w", err)
		}
		answer <- rep
	}()
	return answer
}

// wantAsync checks that the store started at least reads and writes
// asynchronously: the requests took the asynchronous path.
func wantAsync(t *testing.T, st *memstore.Async, reads, writes int64) {
	t.Helper()
	if r, w := st.Started(); r < reads || w < writes {
		t.Fatalf("the store started %d reads and %d writes asynchronously, want at least %d and %d: the blocker did not take the asynchronous path",
			r, w, reads, writes)
	}
}

// TestAsyncReadWrite: READ and WRITE served from the store's callbacks
// read what was written, with zeros (not the buffer's garbage) past the
// object's end and Serviced counting the bytes that came from it; a
// missing object fails with ErrNotFound; and every request took the
// asynchronous path.
func TestAsyncReadWrite(t *testing.T) {
	st := newAsyncStore(t, 100*time.Microsecond)
	f := startAsyncBlocker(t, st)
	const name = "obj"
	var m model
	writes := []struct{ off, n int }{
		{0, 4 * kib}, {1, 1}, {4*kib - 1, 2}, {12345, 777}, {64 * kib, 64 * kib}, {200 * kib, 4 * kib},
	}
	for i, w := range writes {
		data := random(uint64(i), w.n)
		f.write(name, uint64(w.off), data)
		m.write(w.off, data)
		m.check(t, f.filed, name, max(w.off-10, 0), w.n+20)
	}
	for _, r := range []struct{ off, n int }{{0, len(m)}, {len(m) - 100, 4 * kib}, {len(m), 4 * kib}, {len(m) + 4*kib, 4 * kib}} {
		m.check(t, f.filed, name, r.off, r.n)
	}
	f.fails(req{op: xseg.OpRead, target: "missing", size: 4 * kib}, errs.ErrNotFound)
	wantAsync(t, st, int64(len(writes))+5, int64(len(writes)))
}

// TestAsyncAnswersOnlyFromTheCallback: while the store holds a WRITE
// back, the blocker does not answer it; once the store has called back,
// the answer comes and a crash keeps the write (a WRITE served
// asynchronously is durable when answered, FUA or not). A blocker that
// answered from ServeAsync, before the callback, fails here.
func TestAsyncAnswersOnlyFromTheCallback(t *testing.T) {
	st := newAsyncStore(t, 0)
	f := startAsyncBlocker(t, st)
	for i, flags := range []xseg.Flags{0, xseg.FlagFUA, 0, xseg.FlagFUA} {
		name := fmt.Sprintf("obj%d", i)
		data := random(uint64(i), 8*kib)
		st.Hold()
		answer := f.sendAsync(req{op: xseg.OpWrite, target: name, off: 4 * kib, data: data, flags: flags})
		testutil.WaitFor(t, 10*time.Second, "the WRITE to reach the store", func() bool { return st.Queued() == 1 })
		// A PING behind the WRITE: the port's loop has finished with
		// the WRITE (and would have answered it, if it answered
		// without the store) before it takes the PING.
		f.ok(req{op: xseg.OpPing})
		select {
		case rep := <-answer:
			t.Fatalf("WRITE %d (flags %v) answered (%v) while the store still held it", i, flags, rep.err)
		default:
		}
		crashed := st.Crash() // before the callback: nothing to keep
		if got := content(t, crashed.Store, name); got != nil {
			t.Fatalf("the held write of %q is in the store before its callback", name)
		}
		crashed.Close()
		st.Release()
		rep := <-answer
		if rep.err != nil || rep.serviced != uint64(len(data)) {
			t.Fatalf("WRITE %d: serviced %d, %v", i, rep.serviced, rep.err)
		}
		crashed = st.Crash()
		if got := content(t, crashed.Store, name); !bytes.Equal(got, append(make([]byte, 4*kib), data...)) {
			t.Errorf("WRITE %d (flags %v) answered, then a crash: the object holds %d bytes, want the %d written", i, flags, len(got), 4*kib+len(data))
		}
		crashed.Close()
	}
	wantAsync(t, st, 0, 4)
}

// TestAsyncSyncCoversAnsweredWrites: writers send plain WRITEs that the
// store completes in shuffled order after random delays, and SYNCs or
// FLUSHes in between; a crash taken as soon as a SYNC or FLUSH is
// answered keeps every write answered before it was sent, whichever
// writer sent it.
func TestAsyncSyncCoversAnsweredWrites(t *testing.T) {
	st := newAsyncStore(t, 300*time.Microsecond)
	f := startAsyncBlocker(t, st)
	const (
		writers = 6
		rounds  = 25
		size    = 4 * kib
	)
	type write struct {
		name string
		off  int
		data []byte
	}
	var mu sync.Mutex
	var answered []write // in the order of their answers
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			name := fmt.Sprintf("obj%d", w)
			for i := range rounds {
				wr := write{name, i * size, random(uint64(w*rounds+i), size)}
				// Two writes in flight at once, one answered after the
				// other in whatever order the store ends them.
				a := f.sendAsync(req{op: xseg.OpWrite, target: name, off: uint64(wr.off), data: wr.data})
				extra := write{name + "x", i * size, random(uint64(1000+w*rounds+i), size)}
				b := f.sendAsync(req{op: xseg.OpWrite, target: extra.name, off: uint64(extra.off), data: extra.data})
				for _, ch := range []struct {
					c  <-chan reply
					wr write
				}{{a, wr}, {b, extra}} {
					if rep := <-ch.c; rep.err != nil {
						t.Errorf("WRITE %q at %d: %v", ch.wr.name, ch.wr.off, rep.err)
						return
					}
					mu.Lock()
					answered = append(answered, ch.wr)
					mu.Unlock()
				}
				mu.Lock()
				before := len(answered)
				mu.Unlock()
				op := xseg.OpSync
				if i%2 == 1 {
					op = xseg.OpFlush
				}
				if rep := <-f.sendAsync(req{op: op}); rep.err != nil {
					t.Errorf("%v: %v", op, rep.err)
					return
				}
				crashed := st.Crash()
				mu.Lock()
				covered := answered[:before]
				mu.Unlock()
				for _, c := range covered {
					got := make([]byte, size)
					if n, err := crashed.ReadAt(context.Background(), c.name, got, int64(c.off)); err != nil || n != size || !bytes.Equal(got, c.data) {
						t.Errorf("writer %d round %d: %v answered, then a crash: [%d,+%d) of %q, answered before the %v was sent, is lost (n=%d, %v)",
							w, i, op, c.off, size, c.name, op, n, err)
					}
				}
				crashed.Close()
				if t.Failed() {
					return
				}
			}
		})
	}
	wg.Wait()
	wantAsync(t, st, 0, writers*rounds*2)
}

// TestAsyncFlushFlagIsNotServedAsynchronously: a READ or WRITE with the
// FLUSH flag makes durable what was answered before it (here a COPY, a
// TRUNCATE and a DELETE, which only a sync makes durable) before it is
// served, so it must not take the asynchronous path, which does not sync.
func TestAsyncFlushFlagIsNotServedAsynchronously(t *testing.T) {
	cases := []struct {
		name string
		run  func(f *filed) // after the COPY, TRUNCATE and DELETE
	}{
		{"WRITE", func(f *filed) {
			f.ok(req{op: xseg.OpWrite, target: "other", data: random(5, 4*kib), flags: xseg.FlagFlush})
		}},
		{"WRITE with FUA", func(f *filed) {
			f.ok(req{op: xseg.OpWrite, target: "other", data: random(5, 4*kib), flags: xseg.FlagFlush | xseg.FlagFUA})
		}},
		{"READ", func(f *filed) {
			f.ok(req{op: xseg.OpRead, target: "src", size: 4 * kib, flags: xseg.FlagFlush})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newAsyncStore(t, 0)
			f := startAsyncBlocker(t, st)
			src := random(3, 8*kib)
			f.ok(req{op: xseg.OpWrite, target: "src", data: src, flags: xseg.FlagFUA})
			f.ok(req{op: xseg.OpWrite, target: "gone", data: src, flags: xseg.FlagFUA})
			f.ok(req{op: xseg.OpCopy, target: "dst", p: &wire.Copy{Source: "src"}})
			f.ok(req{op: xseg.OpTruncate, target: "src", off: 100})
			f.ok(req{op: xseg.OpDelete, target: "gone"})
			// The crash is real: nothing has synced them yet.
			before := st.Crash()
			if content(t, before.Store, "dst") != nil || len(content(t, before.Store, "src")) != len(src) || content(t, before.Store, "gone") == nil {
				t.Fatal("COPY, TRUNCATE or DELETE durable before any sync: the test shows nothing")
			}
			before.Close()
			c.run(f.filed)
			crashed := st.Crash()
			defer crashed.Close()
			if got := content(t, crashed.Store, "dst"); !bytes.Equal(got, src) {
				t.Errorf("%s with the FLUSH flag answered, then a crash: the COPY before it is lost", c.name)
			}
			if got := content(t, crashed.Store, "src"); len(got) != 100 {
				t.Errorf("%s with the FLUSH flag answered, then a crash: the TRUNCATE before it is lost (%d bytes)", c.name, len(got))
			}
			if content(t, crashed.Store, "gone") != nil {
				t.Errorf("%s with the FLUSH flag answered, then a crash: the DELETE before it is lost", c.name)
			}
		})
	}
}

// TestAsyncLockWaitsBesideIO: an ACQUIRE waiting for a lock held by
// another owner and a LOCKWAIT hold no worker and do not hold up the
// READs and WRITEs served asynchronously meanwhile; both are answered at
// the release.
func TestAsyncLockWaitsBesideIO(t *testing.T) {
	st := newAsyncStore(t, 100*time.Microsecond)
	f := startAsyncBlocker(t, st)
	ctx := context.Background()
	if err := st.TryLock(ctx, "vol", "A"); err != nil {
		t.Fatal(err)
	}
	acquire := f.sendAsync(req{op: xseg.OpAcquire, target: "vol", p: &wire.Lock{Owner: "B"}})
	wait := lockWait(f.filed, "vol", "B")
	testutil.WaitFor(t, 10*time.Second, "the ACQUIRE and LOCKWAIT to wait", func() bool { return f.p.InFlight() == 2 })
	var m model
	for i := range 32 {
		data := random(uint64(i), 4*kib)
		f.write("obj", uint64(i*4*kib), data)
		m.write(i*4*kib, data)
	}
	m.check(t, f.filed, "obj", 0, len(m))
	select {
	case rep := <-acquire:
		t.Fatalf("ACQUIRE of a held lock answered (%v) before the release", rep.err)
	default:
	}
	if err := st.Unlock(ctx, "vol", "A", false); err != nil {
		t.Fatal(err)
	}
	if rep := <-acquire; rep.err != nil {
		t.Fatalf("ACQUIRE after the release: %v", rep.err)
	}
	if rep := <-wait; rep.err != nil { // free, or B's: either will do
		t.Fatalf("LOCKWAIT after the release: %v", rep.err)
	}
	if owner, err := st.LockOwner(ctx, "vol"); err != nil || owner != "B" {
		t.Fatalf("lock held by %q (%v), want B", owner, err)
	}
	wantAsync(t, st, 1, 32)
}

// TestAsyncStopWaitsForCallbacks: stopping the peer waits until the store
// has called back every READ and WRITE in flight, which are answered with
// their result, not dropped.
func TestAsyncStopWaitsForCallbacks(t *testing.T) {
	st := newAsyncStore(t, 0)
	f := startAsyncBlocker(t, st)
	data := random(1, 4*kib)
	st.Hold()
	answer := f.sendAsync(req{op: xseg.OpWrite, target: "obj", data: data})
	testutil.WaitFor(t, 10*time.Second, "the WRITE to reach the store", func() bool { return st.Queued() == 1 })
	stopped := make(chan struct{})
	go func() { f.stop(); close(stopped) }()
	// PINGs until one is refused: the peer is draining, its loop still
	// runs (a WRITE is in flight).
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rep, err := f.send(ctx, req{op: xseg.OpPing})
		cancel()
		if err != nil {
			t.Fatalf("PING while the peer stops, with a WRITE in flight: %v", err)
		}
		if errors.Is(rep.err, errs.ErrShutdown) {
			break
		}
	}
	select {
	case <-stopped:
		t.Fatal("the peer stopped with a WRITE in the store not called back")
	case rep := <-answer:
		t.Fatalf("WRITE answered (%v) while the store held it", rep.err)
	default:
	}
	st.Release()
	<-stopped
	if rep := <-answer; rep.err != nil || rep.serviced != uint64(len(data)) {
		t.Fatalf("WRITE in flight at Stop: serviced %d, %v", rep.serviced, rep.err)
	}
	c := st.Crash()
	defer c.Close()
	if got := content(t, c.Store, "obj"); !bytes.Equal(got, data) {
		t.Error("the WRITE answered at Stop is not in the store")
	}
}
