package composer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/composer"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// The tests of the split/collect path (composer.startIO) run every case
// on both ways into it: through Serve on a worker (the composer's
// ServeAsync hidden: every request asks the mapper or the cache there)
// and through ServeAsync in the port's loop (a request whose mappings are
// cached; the test checks that no worker served it). The data blocker is
// the real one over an in-memory store with faults injected; the mapper
// is scripted, so that each case gets exactly the pieces it needs.

const splitBS = 64 << 10 // the scripted volume's block size

// mblock is one block of the scripted map: its object ("" for a zero
// block) and whether the volume shares it (a snapshot's).
type mblock struct {
	object   string
	readOnly bool
}

// mapScript is the scripted mapper of volume "vol". MAPW copies a shared
// block up to an object of its own first, as mapperd does.
type mapScript struct {
	mem       *memstore.Store
	mu        sync.Mutex
	blocks    []mblock
	cacheable bool // answer PieceCacheable (the lock is held)
	brokenW   bool // MAPW answers shared blocks as they are (a mapper's bug)
	mapR      atomic.Int32
	mapW      atomic.Int32
}

// asked is how many map requests the mapper got.
func (m *mapScript) asked() int32 { return m.mapR.Load() + m.mapW.Load() }

func (m *mapScript) serve(ctx context.Context, _ *peer.Peer, r *xseg.Request) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch r.Op() {
	case xseg.OpInfo:
		return peer.Reply(r, &wire.VolumeInfo{Size: uint64(len(m.blocks)) * splitBS, BlockSize: splitBS})
	case xseg.OpMapR, xseg.OpMapW:
	default:
		return nil
	}
	write := r.Op() == xseg.OpMapW
	if write {
		m.mapW.Add(1)
	} else {
		m.mapR.Add(1)
	}
	var pieces []wire.MapPiece
	for pos, end := r.Offset(), r.Offset()+r.Size(); pos < end; {
		b := pos / splitBS
		to := min((b+1)*splitBS, end)
		e := &m.blocks[b]
		if write && !m.brokenW {
			switch {
			case e.object == "":
				e.object = fmt.Sprintf("vol-own-%d", b)
			case e.readOnly:
				own := e.object + "-cow"
				if err := m.mem.Copy(ctx, e.object, own); err != nil && !errors.Is(err, errs.ErrNotFound) {
					return err
				}
				e.object, e.readOnly = own, false
			}
		}
		p := wire.MapPiece{Object: e.object, Offset: pos - b*splitBS, Size: to - pos}
		if e.object == "" {
			p = wire.MapPiece{Size: to - pos, Flags: wire.PieceZero}
		} else if e.readOnly {
			p.Flags |= wire.PieceReadOnly
		}
		if m.cacheable {
			p.Flags |= wire.PieceCacheable
		}
		pieces = append(pieces, p)
		pos = to
	}
	return peer.Reply(r, &wire.MapReply{Pieces: pieces})
}

// served counts the READs and WRITEs that reached Serve (a worker).
type served struct {
	c *composer.Composer
	n atomic.Int32
}

func (s *served) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	if op := r.Op(); op == xseg.OpRead || op == xseg.OpWrite {
		s.n.Add(1)
	}
	return s.c.Serve(ctx, p, r)
}

// withAsync is served with the composer's fast path.
type withAsync struct{ *served }

func (a withAsync) ServeAsync(p *peer.Peer, r *xseg.Request) bool { return a.c.ServeAsync(p, r) }

// lockedBuffer is a log both the peer's goroutines and the test use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type splitRig struct {
	t      testing.TB
	async  bool
	mem    *memstore.Store
	plan   *faultstore.Plan
	m      *mapScript
	served *served
	log    *lockedBuffer // the composer's
	client *peer.Client
	// reasked counts the requests expected to find their mappings cached
	// that asked the mapper again (their lease ran out).
	reasked int32
}

// newSplitRig starts the scripted mapper (port 2), a blocker over an
// in-memory store (port 3) and the composer (port 4), served through
// ServeAsync too if async.
func newSplitRig(t testing.TB, async bool, blocks []mblock) *splitRig {
	s := testbin.Segment(t, "split", 32)
	g := &splitRig{t: t, async: async, mem: memstore.New(), plan: faultstore.NewPlan(1), log: &lockedBuffer{}}
	g.m = &mapScript{mem: g.mem, blocks: blocks, cacheable: true}
	start := func(port int, h peer.Handler, log *lockedBuffer) {
		w := &lockedBuffer{}
		if log != nil {
			w = log
		}
		p, err := peer.Start(peer.Options{Role: fmt.Sprintf("%s-%d", t.Name(), port), Segment: s.Name(), PortStart: port, PortEnd: port,
			NrOps: 32, NrThreads: 4, Logger: slog.New(slog.NewTextHandler(w, nil))}, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
	}
	start(2, peer.HandlerFunc(g.m.serve), nil)
	start(3, blocker.New(faultstore.Wrap(g.mem, g.plan), "test"), nil)
	g.served = &served{c: composer.New(2, 3)}
	var h peer.Handler = g.served
	if async {
		h = withAsync{g.served}
	}
	start(4, h, g.log)
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g.client = c
	return g
}

// do sends a READ (data nil: n bytes, into a buffer full of 0xee) or a
// WRITE of data to volume "vol" and returns what a read got. hit says
// whether the mappings are cached: on the async rig such a request must
// not reach a worker, on the other every request does.
func (g *splitRig) do(op xseg.Op, off uint64, n int, data []byte, flags xseg.Flags, hit bool) ([]byte, error) {
	g.t.Helper()
	r, err := g.client.Alloc(n)
	if err != nil {
		g.t.Fatal(err)
	}
	r.SetOp(op)
	if err := r.SetTarget("vol"); err != nil {
		g.t.Fatal(err)
	}
	r.SetOffset(off)
	r.SetSize(uint64(n))
	r.SetFlags(flags)
	if op == xseg.OpWrite {
		copy(r.Buffer(), data)
	} else {
		for i := range r.Buffer() {
			r.Buffer()[i] = 0xee
		}
	}
	before, maps := g.served.n.Load(), g.m.asked()
	rep, err := g.call(r)
	if err != nil {
		g.t.Fatal(err)
	}
	defer g.client.Put(rep)
	workers, asked := g.served.n.Load()-before, g.m.asked()-maps
	if hit && asked != 0 {
		// The cached mappings' lease (volume.MappingLease, counted from
		// the last map request) ran out on a slow machine: the request
		// asked the mapper again, through a worker.
		g.reasked++
	}
	switch {
	case g.async && hit && asked == 0 && workers != 0:
		g.t.Fatalf("%s [%d,+%d) with its mappings cached reached a worker, not the fast path", op, off, n)
	case (!g.async || !hit || asked != 0) && workers != 1:
		g.t.Fatalf("%s [%d,+%d) reached a worker %d times, want once", op, off, n, workers)
	}
	if err := rep.Err(); err != nil {
		return nil, err
	}
	if rep.Serviced() != uint64(n) {
		g.t.Fatalf("%s [%d,+%d): %d bytes serviced", op, off, n, rep.Serviced())
	}
	return append([]byte(nil), rep.Buffer()[:n]...), nil
}

// call sends r to the composer and waits for its reply.
func (g *splitRig) call(r *xseg.Request) (*xseg.Request, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return g.client.Call(ctx, r, 4)
}

func (g *splitRig) object(name string, n int) []byte {
	g.t.Helper()
	b := make([]byte, n)
	if _, err := g.mem.ReadAt(context.Background(), name, b, 0); err != nil {
		g.t.Fatalf("object %q: %v", name, err)
	}
	return b
}

func bothPaths(t *testing.T, f func(t *testing.T, async bool)) {
	t.Run("worker", func(t *testing.T) { f(t, false) })
	t.Run("fast", func(t *testing.T) { f(t, true) })
}

// TestSplitReadAcrossZeroAndObjects: a read spanning an object, a zero
// block, a second object and an object mapped but never written gets
// each part from where it is and zeros for the last two, over whatever
// the caller's buffer held; from the mapper and from the cache alike.
func TestSplitReadAcrossZeroAndObjects(t *testing.T) {
	bothPaths(t, func(t *testing.T, async bool) {
		g := newSplitRig(t, async, []mblock{{object: "A"}, {}, {object: "B"}, {object: "C"}})
		a, b := testutil.Pattern(splitBS, 1), testutil.Pattern(splitBS, 2)
		ctx := context.Background()
		if err := g.mem.WriteAt(ctx, "A", a, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := g.mem.WriteAt(ctx, "B", b, 0, false); err != nil {
			t.Fatal(err)
		}
		off := uint64(splitBS - 1000)
		n := 3*splitBS - 5000 // ends inside C
		want := make([]byte, n)
		copy(want, a[splitBS-1000:])
		copy(want[1000+splitBS:], b)
		for _, hit := range []bool{false, true} {
			got, err := g.do(xseg.OpRead, off, n, nil, 0, hit)
			if err != nil {
				t.Fatalf("read (cached %v): %v", hit, err)
			}
			if !bytes.Equal(got, want) {
				i := 0
				for got[i] == want[i] {
					i++
				}
				t.Fatalf("read (cached %v): differs at byte %d: %#x, want %#x", hit, i, got[i], want[i])
			}
		}
		if n := g.m.mapR.Load(); n != 1+g.reasked {
			t.Errorf("%d MAPRs, want %d (the second read from the cache)", n, 1+g.reasked)
		}
	})
}

// TestSplitWriteCopiesUpASharedPiece: a write over a block the volume
// owns and one it shares with a snapshot, whose mappings the cache holds
// from a read, asks the mapper (MAPW: the shared block is copied up)
// instead of writing the shared object in place; the next write of the
// range comes from the cache, to the copy. Every part of a FUA write
// carries FUA.
func TestSplitWriteCopiesUpASharedPiece(t *testing.T) {
	bothPaths(t, func(t *testing.T, async bool) {
		g := newSplitRig(t, async, []mblock{{object: "A"}, {object: "S", readOnly: true}})
		ctx := context.Background()
		snap := testutil.Pattern(splitBS, 3)
		if err := g.mem.WriteAt(ctx, "S", snap, 0, false); err != nil {
			t.Fatal(err)
		}
		if _, err := g.do(xseg.OpRead, 0, 2*splitBS, nil, 0, false); err != nil {
			t.Fatal(err)
		}
		off, n := uint64(splitBS/2), splitBS // half of A, half of S
		for i, hit := range []bool{false, true} {
			data := testutil.Pattern(n, byte(10+i))
			if _, err := g.do(xseg.OpWrite, off, n, data, xseg.FlagFUA, hit); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			if got := g.object("S", splitBS); !bytes.Equal(got, snap) {
				t.Fatalf("write %d changed the shared object", i)
			}
			want := append(append([]byte(nil), make([]byte, splitBS/2)...), data[:splitBS/2]...)
			if got := g.object("A", splitBS); !bytes.Equal(got, want) {
				t.Fatalf("write %d: object A is not what was written", i)
			}
			want = append(append([]byte(nil), data[splitBS/2:]...), snap[splitBS/2:]...)
			if got := g.object("S-cow", splitBS); !bytes.Equal(got, want) {
				t.Fatalf("write %d: the copy of S is not the snapshot's data under what was written", i)
			}
			if c := g.plan.Counts(); c.FUAWrites != int64(2*(i+1)) || c.Writes != 0 {
				t.Fatalf("after FUA write %d: %d writes, %d with FUA; want %d, all with FUA", i, c.Writes, c.FUAWrites, 2*(i+1))
			}
		}
		if n := g.m.mapW.Load(); n != 1+g.reasked {
			t.Errorf("%d MAPWs, want %d", n, 1+g.reasked)
		}
	})
}

// TestSplitWriteSendsNothingOnAnUnwritablePiece: when the mapper answers
// a write with a piece the volume does not own (a mapper's bug), the
// write fails as damage and no part of it is written, not even the parts
// before that piece; the next write asks the mapper again.
func TestSplitWriteSendsNothingOnAnUnwritablePiece(t *testing.T) {
	g := newSplitRig(t, false, []mblock{{object: "A"}, {object: "S", readOnly: true}})
	g.m.brokenW = true
	for i := 0; i < 2; i++ {
		_, err := g.do(xseg.OpWrite, 0, 2*splitBS, testutil.Pattern(2*splitBS, 4), 0, false)
		if !errors.Is(err, errs.ErrCorrupt) {
			t.Fatalf("write %d over a read-only piece: %v, want ErrCorrupt", i, err)
		}
	}
	if c := g.plan.Counts(); c.Writes+c.FUAWrites != 0 {
		t.Errorf("%d objects written by a write that failed before sending", c.Writes+c.FUAWrites)
	}
	if n := g.m.mapW.Load(); n != 2 {
		t.Errorf("%d MAPWs, want 2", n)
	}
}

// TestSplitPartFailureNamesVolumeAndRange: when the blocker fails one
// part of a split request, the request fails with the blocker's error,
// and the composer's log names the volume, the range and the object.
func TestSplitPartFailureNamesVolumeAndRange(t *testing.T) {
	bothPaths(t, func(t *testing.T, async bool) {
		g := newSplitRig(t, async, []mblock{{object: "A"}, {object: "B"}, {object: "C"}})
		g.plan.Inject(faultstore.Rule{Object: func(name string) bool { return name == "B" }, Errno: syscall.EIO})
		off, n := uint64(100), 2*splitBS
		// The first from the mapper, the others from the cache.
		for i, op := range []xseg.Op{xseg.OpWrite, xseg.OpRead, xseg.OpWrite} {
			_, err := g.do(op, off, n, testutil.Pattern(n, 5), 0, i > 0)
			if !errors.Is(err, errs.ErrIO) {
				t.Fatalf("%s %d with one part failing: %v, want ErrIO", op, i, err)
			}
			want := fmt.Sprintf(`%s volume \"vol\" [%d,+%d): %s object \"B\"`, op, off, n, op)
			if c := strings.Count(g.log.String(), want); c != 1+i/2 {
				t.Fatalf("the composer's log says %d times %s, want %d:\n%s", c, want, 1+i/2, g.log.String())
			}
		}
		if n := g.m.asked(); n != 1+g.reasked {
			t.Errorf("%d map requests, want %d", n, 1+g.reasked)
		}
	})
}

// BenchmarkSplitPaths measures READs and WRITEs of 8 KiB across a block
// boundary (two parts) whose mappings are cached, served by a worker
// (Serve) and in the port's loop (ServeAsync), at depths 1 and 32, all
// in this process over an in-memory store: the composer's own cost per
// request, plus the segment's round trips. via-worker is the share of
// the requests a worker served. Run with -benchtime 2000x.
func BenchmarkSplitPaths(b *testing.B) {
	const nblocks, n = 64, 8 << 10
	for _, async := range []bool{false, true} {
		blocks := make([]mblock, nblocks)
		for i := range blocks {
			blocks[i].object = fmt.Sprintf("obj-%d", i)
		}
		g := newSplitRig(b, async, blocks)
		if _, err := g.do(xseg.OpWrite, 0, nblocks*splitBS, make([]byte, nblocks*splitBS), 0, false); err != nil {
			b.Fatal(err)
		}
		path := map[bool]string{false: "worker", true: "fast"}[async]
		for _, op := range []xseg.Op{xseg.OpRead, xseg.OpWrite} {
			for _, depth := range []int{1, 32} {
				b.Run(fmt.Sprintf("%s/%s/depth%d", path, op, depth), func(b *testing.B) {
					before := g.served.n.Load()
					var next atomic.Int64
					var wg sync.WaitGroup
					start := time.Now()
					for range depth {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
								r, err := g.client.Alloc(n)
								if err != nil {
									b.Error(err)
									return
								}
								r.SetOp(op)
								if err := r.SetTarget("vol"); err != nil {
									b.Error(err)
									return
								}
								r.SetOffset(uint64(i%(nblocks-1)+1)*splitBS - n/2)
								r.SetSize(n)
								rep, err := g.call(r)
								if err == nil {
									err = rep.Err()
									g.client.Put(rep)
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
					// The fast path takes all but the requests that find
					// the mappings' lease (volume.MappingLease) run out.
					b.ReportMetric(float64(g.served.n.Load()-before)/float64(b.N), "via-worker")
				})
			}
		}
	}
}
