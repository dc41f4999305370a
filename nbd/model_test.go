package nbd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archipelago/internal/testutil"
)

// TestModel drives an export through the server with random batches of
// non-overlapping requests in flight (writes, reads, trims, zeroes, block
// status) and compares every read with a plain byte slice, and every block
// status with a page-level allocation model.
func TestModel(t *testing.T) {
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			testModel(t, structured, 1, nil)
		})
		// READ and WRITE through AsyncIO, their replies queued from
		// other goroutines, some before the request is started.
		for _, sparse := range []bool{false, true} {
			t.Run(fmt.Sprintf("async/structured=%v/sparse=%v", structured, sparse), func(t *testing.T) {
				testModel(t, structured, 1, func(m *MemBackend) Backend { return newAsyncBackend(m, !sparse) })
			})
		}
	}
	t.Run("minblock=512", func(t *testing.T) { testModel(t, true, 512, nil) })
}

// testModel runs the model against a MemBackend, or what wrap makes of it.
func testModel(t *testing.T, structured bool, align uint64, wrap func(*MemBackend) Backend) {
	const size = 1<<20 + 3*memPage // not a power of two
	rng := rand.New(rand.NewPCG(1, uint64(align)))
	m := memWith(t, map[string]MemOptions{"vol": {MinBlock: uint32(align)}}, size)
	var b Backend = m
	if wrap != nil {
		b = wrap(m)
	}
	ts := startServer(t, b, Options{MaxInFlight: 8})
	c := connect(t, ts.sock, "vol", structured, structured)
	oracle := make([]byte, size)
	alloc := make([]bool, (size+memPage-1)/memPage)

	type op struct {
		typ   uint16
		flags uint16
		off   uint64
		n     uint32
		data  []byte
	}
	for step := range 400 {
		// Pick non-overlapping ranges for one batch.
		var ops []op
		var taken [][2]uint64
	pick:
		for range 1 + rng.IntN(8) {
			n := (1 + rng.Uint64N(64<<10)) / align * align
			if n == 0 {
				n = align
			}
			off := rng.Uint64N(size-n+1) / align * align
			// Requests in flight together touch distinct pages: allocation
			// is per page, so a write next to a block status in the same
			// page would make the answer depend on timing.
			lo, hi := off/memPage, (off+n-1)/memPage+1
			for _, r := range taken {
				if lo < r[1] && r[0] < hi {
					continue pick
				}
			}
			taken = append(taken, [2]uint64{lo, hi})
			o := op{off: off, n: uint32(n)}
			switch k := rng.IntN(10); {
			case k < 4:
				o.typ = cmdWrite
				o.data = make([]byte, n)
				for i := range o.data {
					o.data[i] = byte(rng.IntN(256))
				}
				if rng.IntN(4) == 0 {
					o.flags = cmdFlagFUA
				}
			case k < 7:
				o.typ = cmdRead
			case k < 8:
				o.typ = cmdTrim
			case k < 9:
				o.typ = cmdWriteZeroes
				if rng.IntN(2) == 0 {
					o.flags = cmdFlagNoHole
				}
			default:
				if !structured {
					o.typ = cmdRead
					break
				}
				o.typ = cmdBlockStatus
			}
			ops = append(ops, o)
		}
		cks := make([]uint64, len(ops))
		for i, o := range ops {
			cks[i] = c.send(o.typ, o.flags, o.off, o.n, o.data)
		}
		for i, o := range ops {
			r := c.wait(cks[i])
			if r.err != 0 {
				t.Fatalf("step %d: %v: %v", step, o.typ, r)
			}
			end := o.off + uint64(o.n)
			switch o.typ {
			case cmdRead:
				if !bytes.Equal(r.data, oracle[o.off:end]) {
					t.Fatalf("step %d: read %d+%d differs from the model", step, o.off, o.n)
				}
			case cmdBlockStatus:
				pos := o.off
				for _, e := range r.extents {
					for p := pos; p < min(pos+uint64(e[0]), end); p++ {
						if hole := e[1]&stateHole != 0; hole == alloc[p/memPage] {
							t.Fatalf("step %d: block status says hole=%v at %d, model %v (%v)", step, hole, p, !alloc[p/memPage], r)
						}
						if e[1]&stateZero != 0 && oracle[p] != 0 {
							t.Fatalf("step %d: block status says zero at %d", step, p)
						}
					}
					pos += uint64(e[0])
				}
				if pos < end && len(r.extents) == 0 {
					t.Fatalf("step %d: empty block status", step)
				}
			}
		}
		// Apply the batch's effects to the model.
		for _, o := range ops {
			end := o.off + uint64(o.n)
			switch o.typ {
			case cmdWrite:
				copy(oracle[o.off:], o.data)
				for p := o.off / memPage; p*memPage < end; p++ {
					alloc[p] = true
				}
			case cmdTrim, cmdWriteZeroes:
				clear(oracle[o.off:end])
				for p := o.off / memPage; p*memPage < end; p++ {
					full := p*memPage >= o.off && (min((p+1)*memPage, size) <= end)
					if o.typ == cmdWriteZeroes && o.flags&cmdFlagNoHole != 0 {
						alloc[p] = true
					} else if full {
						alloc[p] = false
					}
				}
			}
		}
	}
	// A final full comparison, through a second connection.
	c2 := connect(t, ts.sock, "vol", !structured, false)
	for off := uint64(0); off < size; off += 256 << 10 {
		n := min(256<<10, size-off)
		if !bytes.Equal(c2.pread(off, uint32(n)), oracle[off:off+n]) {
			t.Fatalf("final read at %d differs", off)
		}
	}
}

// poolBackend lends buffers and counts them.
type poolBackend struct {
	*MemBackend
	gets, releases, refused atomic.Int64
	mu                      sync.Mutex
	lent                    map[*poolBuf]bool
}

type poolExport struct {
	Export
	b *poolBackend
}

type poolBuf struct {
	b *poolBackend
	p []byte
}

func (p *poolBackend) Open(ctx context.Context, name string) (Export, error) {
	e, err := p.MemBackend.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &poolExport{Export: e, b: p}, nil
}

func (e *poolExport) Get(n int) Buffer {
	if n > 64<<10 {
		e.b.refused.Add(1)
		return nil // the server falls back to its own memory
	}
	e.b.gets.Add(1)
	b := &poolBuf{b: e.b, p: make([]byte, n)}
	e.b.mu.Lock()
	e.b.lent[b] = true
	e.b.mu.Unlock()
	return b
}

func (b *poolBuf) Bytes() []byte { return b.p }

func (b *poolBuf) Release() {
	b.b.mu.Lock()
	defer b.b.mu.Unlock()
	if !b.b.lent[b] {
		panic("buffer released twice")
	}
	delete(b.b.lent, b)
	b.b.releases.Add(1)
}

func TestBufferPool(t *testing.T) {
	b := &poolBackend{MemBackend: memWith(t, map[string]MemOptions{"vol": {}}, 4<<20), lent: map[*poolBuf]bool{}}
	ts := startServer(t, b, Options{})
	for _, structured := range []bool{false, true} {
		c := connect(t, ts.sock, "vol", structured, false)
		c.pwrite(0, testutil.Pattern(8192, 1))
		c.pwrite(1<<20, testutil.Pattern(1<<20, 2)) // too big for the pool
		if !bytes.Equal(c.pread(0, 8192), testutil.Pattern(8192, 1)) || !bytes.Equal(c.pread(1<<20, 1<<20), testutil.Pattern(1<<20, 2)) {
			t.Fatal("data through lent buffers differs")
		}
		if r := c.do(cmdRead, 0, 4<<20, 4096, nil); r.err != einval { // refused: no buffer taken
			t.Fatal(r)
		}
		c.disc()
		c.closed()
	}
	waitClients(t, ts.srv, 0)
	if b.gets.Load() != 4 || b.releases.Load() != 4 || b.refused.Load() != 4 {
		t.Fatalf("gets %d releases %d refused %d", b.gets.Load(), b.releases.Load(), b.refused.Load())
	}
}

// BenchmarkMemQD32 measures 4 KiB random reads and writes with 32 requests
// in flight on one connection to a MemBackend export (the hand-written
// test client, so the client's cost is included).
func BenchmarkMemQD32(b *testing.B) {
	const size = 64 << 20
	for _, typ := range []uint16{cmdRead, cmdWrite} {
		name := map[uint16]string{cmdRead: "randread", cmdWrite: "randwrite"}[typ]
		b.Run(name, func(b *testing.B) {
			m := NewMemBackend()
			m.Add("vol", size, MemOptions{})
			e, _ := m.Open(context.Background(), "vol")
			e.WriteAt(context.Background(), make([]byte, size), 0, false)
			ts := startServer(b, m, Options{})
			c := connect(b, ts.sock, "vol", true, false)
			payload := testutil.Pattern(4096, 1)
			rng := rand.New(rand.NewPCG(1, 2))
			next := func() uint64 {
				var p []byte
				if typ == cmdWrite {
					p = payload
				}
				return c.send(typ, 0, rng.Uint64N(size/4096)*4096, 4096, p)
			}
			for range 32 {
				next()
			}
			b.SetBytes(4096)
			b.ResetTimer()
			for range b.N {
				if r := c.recv(); r.err != 0 {
					b.Fatal(r)
				}
				next()
			}
			b.StopTimer()
			for range 32 {
				c.recv()
			}
		})
	}
}
