package nbd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// asyncBackend serves the READ and WRITE of its exports through AsyncIO
// with buffers of its own pool. Each request picks at random how it ends:
// done called before StartRead/StartWrite returns, done called from
// another goroutine after a pause, or refused (the server then calls
// ReadAt or WriteAt). With sparse off the export is no SparseReader, so
// structured reads go this way too. It records which writes had completed
// when each Flush was called.
type asyncBackend struct {
	*MemBackend
	noSparse bool

	mu        sync.Mutex
	rng       *rand.Rand
	lent      map[*asyncBuf]bool
	completed map[uint64]bool   // offsets of the writes completed
	flushed   []map[uint64]bool // completed, as each Flush began
	starts    atomic.Int64      // requests started through AsyncIO
}

func newAsyncBackend(m *MemBackend, noSparse bool) *asyncBackend {
	return &asyncBackend{MemBackend: m, noSparse: noSparse, rng: rand.New(rand.NewPCG(3, 4)),
		lent: map[*asyncBuf]bool{}, completed: map[uint64]bool{}}
}

// asyncExport has the abilities of a MemBackend export but SparseReader
// (asyncExportSparse adds it).
type asyncExport struct {
	Export
	Trimmer
	ZeroWriter
	Mapper
	b *asyncBackend
}

type asyncExportSparse struct {
	*asyncExport
	SparseReader
}

type asyncBuf struct {
	b *asyncBackend
	p []byte
}

func (b *asyncBuf) Bytes() []byte { return b.p }

func (b *asyncBuf) Release() {
	b.b.mu.Lock()
	defer b.b.mu.Unlock()
	if !b.b.lent[b] {
		panic("buffer released twice")
	}
	delete(b.b.lent, b)
}

func (a *asyncBackend) Open(ctx context.Context, name string) (Export, error) {
	e, err := a.MemBackend.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	x := &asyncExport{Export: e, Trimmer: e.(Trimmer), ZeroWriter: e.(ZeroWriter), Mapper: e.(Mapper), b: a}
	if a.noSparse {
		return x, nil
	}
	return &asyncExportSparse{asyncExport: x, SparseReader: e.(SparseReader)}, nil
}

func (e *asyncExport) Get(n int) Buffer {
	b := &asyncBuf{b: e.b, p: make([]byte, n)}
	e.b.mu.Lock()
	e.b.lent[b] = true
	e.b.mu.Unlock()
	return b
}

// how picks how a request ends: 0 done before returning, 1 from another
// goroutine, 2 refused.
func (e *asyncExport) how() int {
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	return e.b.rng.IntN(3)
}

func (e *asyncExport) run(op func() error, done func(error)) bool {
	switch e.how() {
	case 0:
		e.b.starts.Add(1)
		done(op())
	case 1:
		e.b.starts.Add(1)
		go func() {
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			done(op())
		}()
	default:
		return false
	}
	return true
}

func (e *asyncExport) StartRead(ctx context.Context, p []byte, off uint64, done func(error)) bool {
	return e.run(func() error { return e.ReadAt(ctx, p, off) }, done)
}

func (e *asyncExport) StartWrite(ctx context.Context, p []byte, off uint64, fua bool, done func(error)) bool {
	return e.run(func() error { return e.WriteAt(ctx, p, off, fua) }, done)
}

func (e *asyncExport) WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error {
	err := e.Export.WriteAt(ctx, p, off, fua)
	e.b.mu.Lock()
	e.b.completed[off] = true
	e.b.mu.Unlock()
	return err
}

func (e *asyncExport) Flush(ctx context.Context) error {
	e.b.mu.Lock()
	snap := make(map[uint64]bool, len(e.b.completed))
	for k := range e.b.completed {
		snap[k] = true
	}
	e.b.flushed = append(e.b.flushed, snap)
	e.b.mu.Unlock()
	return e.Export.Flush(ctx)
}

// TestAsyncFlushCoversAnsweredWrites: with writes answered out of order
// from other goroutines, a FLUSH sent after some write replies came finds
// each of those writes completed when the export's Flush is called.
func TestAsyncFlushCoversAnsweredWrites(t *testing.T) {
	const size = 4 << 20
	a := newAsyncBackend(memWith(t, map[string]MemOptions{"vol": {}}, size), true)
	ts := startServer(t, a, Options{})
	for _, structured := range []bool{false, true} {
		c := connect(t, ts.sock, "vol", structured, false)
		next := uint64(0)
		for round := range 50 {
			// 16 writes in flight; read half the replies, then FLUSH
			// while the rest may still run.
			var cks []uint64
			offs := map[uint64]uint64{}
			for range 16 {
				ck := c.send(cmdWrite, 0, next, 4096, make([]byte, 4096))
				offs[ck] = next
				cks = append(cks, ck)
				next = (next + 4096) % size
			}
			var answered []uint64
			got := map[uint64]bool{}
			for range 8 {
				r := c.recv()
				if r.err != 0 {
					t.Fatal(r)
				}
				answered = append(answered, offs[r.cookie])
				got[r.cookie] = true
			}
			a.mu.Lock()
			nf := len(a.flushed)
			a.mu.Unlock()
			if r := c.wait(c.send(cmdFlush, 0, 0, 0, nil)); r.err != 0 {
				t.Fatal(r)
			}
			a.mu.Lock()
			snap := a.flushed[nf]
			a.mu.Unlock()
			for _, off := range answered {
				if !snap[off] {
					t.Fatalf("round %d: the write at %d was answered before FLUSH, but had not completed when Flush was called", round, off)
				}
			}
			for _, ck := range cks {
				if got[ck] {
					continue
				}
				if r := c.wait(ck); r.err != 0 {
					t.Fatal(r)
				}
			}
			a.mu.Lock()
			clear(a.completed)
			a.mu.Unlock()
		}
		c.disc()
		c.closed()
	}
	waitClients(t, ts.srv, 0)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.lent) != 0 {
		t.Fatalf("%d buffers never released", len(a.lent))
	}
	if a.starts.Load() == 0 {
		t.Fatal("no request went through AsyncIO")
	}
}

// TestDirectRepliesInterleave: a READ alone in flight is answered
// directly by the goroutine the export completes it in; a reply too big
// for the socket is sent in part there and its rest by the writer, before
// the replies of the requests that came meanwhile (through the writer, or
// directly once the connection is idle again). Every reply must arrive
// whole and uncorrupted.
func TestDirectRepliesInterleave(t *testing.T) {
	const size = 4 << 20
	a := newAsyncBackend(memWith(t, map[string]MemOptions{"vol": {}}, size), true)
	ts := startServer(t, a, Options{})
	oracle := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range oracle {
		oracle[i] = byte(rng.IntN(256))
	}
	c := connect(t, ts.sock, "vol", true, false)
	for off := 0; off < size; off += 1 << 20 {
		c.pwrite(uint64(off), oracle[off:off+1<<20])
	}
	whole, partial := directWrites.whole.Load(), directWrites.partial.Load()
	for round := range 30 {
		structured := round%2 == 0
		c := connect(t, ts.sock, "vol", structured, false)
		big := uint64(rng.IntN(3)) << 20
		bigCk := c.send(cmdRead, 0, big, 1<<20, nil)
		// Let the big reply fill the socket before more requests come.
		time.Sleep(2 * time.Millisecond)
		type small struct {
			ck, off uint64
			n       uint32
			write   bool
		}
		var smalls []small
		for range 1 + rng.IntN(12) {
			off := 3<<20 + rng.Uint64N(1<<20-64<<10)
			n := uint32(1 + rng.IntN(64<<10))
			if rng.IntN(2) == 0 {
				// Writes over what they read: the same bytes again.
				smalls = append(smalls, small{c.send(cmdWrite, 0, off, n, oracle[off:off+uint64(n)]), off, n, true})
			} else {
				smalls = append(smalls, small{c.send(cmdRead, 0, off, n, nil), off, n, false})
			}
		}
		if r := c.wait(bigCk); r.err != 0 || !bytes.Equal(r.data, oracle[big:big+1<<20]) {
			t.Fatalf("round %d: the 1 MiB read at %d: err %d, data equal %v", round, big, r.err, bytes.Equal(r.data, oracle[big:big+1<<20]))
		}
		for _, s := range smalls {
			r := c.wait(s.ck)
			if r.err != 0 || (!s.write && !bytes.Equal(r.data, oracle[s.off:s.off+uint64(s.n)])) {
				t.Fatalf("round %d: %d bytes at %d (write %v): %v", round, s.n, s.off, s.write, r)
			}
		}
		// Depth 1: each reply directly.
		for range 20 {
			off := rng.Uint64N(size - 4096)
			if !bytes.Equal(c.pread(off, 4096), oracle[off:off+4096]) {
				t.Fatalf("round %d: read at %d differs", round, off)
			}
		}
		c.disc()
		c.closed()
	}
	c.disc()
	c.closed()
	waitClients(t, ts.srv, 0)
	if directWrites.whole.Load() == whole || directWrites.partial.Load() == partial {
		t.Fatalf("direct replies: %d whole, %d in part: want some of each",
			directWrites.whole.Load()-whole, directWrites.partial.Load()-partial)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.lent) != 0 {
		t.Fatalf("%d buffers never released", len(a.lent))
	}
}

// syncAsync is a MemBackend export through AsyncIO that completes every
// request before StartRead/StartWrite returns, with pooled buffers: the
// server's own cost per request, for benchmarks.
type syncAsync struct{ *MemBackend }

type syncAsyncExport struct{ Export }

type syncBuf struct{ p []byte }

var syncBufs = sync.Pool{New: func() any { return &syncBuf{p: make([]byte, 64<<10)} }}

func (b *syncBuf) Bytes() []byte { return b.p }
func (b *syncBuf) Release()      { b.p = b.p[:cap(b.p)]; syncBufs.Put(b) }

func (s syncAsync) Open(ctx context.Context, name string) (Export, error) {
	e, err := s.MemBackend.Open(ctx, name)
	return syncAsyncExport{e}, err
}

func (e syncAsyncExport) Get(n int) Buffer {
	if n > 64<<10 {
		return nil
	}
	b := syncBufs.Get().(*syncBuf)
	b.p = b.p[:n]
	return b
}

func (e syncAsyncExport) StartRead(ctx context.Context, p []byte, off uint64, done func(error)) bool {
	done(e.ReadAt(ctx, p, off))
	return true
}

func (e syncAsyncExport) StartWrite(ctx context.Context, p []byte, off uint64, fua bool, done func(error)) bool {
	done(e.WriteAt(ctx, p, off, fua))
	return true
}

// BenchmarkAsyncQD1 measures 4 KiB random reads and writes one at a time
// on one connection to an export whose AsyncIO completes at once (the
// hand-written test client's cost included).
func BenchmarkAsyncQD1(b *testing.B) {
	const size = 64 << 20
	for _, typ := range []uint16{cmdRead, cmdWrite} {
		name := map[uint16]string{cmdRead: "randread", cmdWrite: "randwrite"}[typ]
		b.Run(name, func(b *testing.B) {
			m := NewMemBackend()
			m.Add("vol", size, MemOptions{})
			e, _ := m.Open(context.Background(), "vol")
			e.WriteAt(context.Background(), make([]byte, size), 0, false)
			ts := startServer(b, syncAsync{m}, Options{})
			c := connect(b, ts.sock, "vol", true, false)
			payload := make([]byte, 4096)
			rng := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(4096)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				var p []byte
				if typ == cmdWrite {
					p = payload
				}
				if r := c.wait(c.send(typ, 0, rng.Uint64N(size/4096)*4096, 4096, p)); r.err != 0 {
					b.Fatal(r)
				}
			}
		})
	}
}
