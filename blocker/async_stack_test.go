package blocker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/composer"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/mapper"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/xseg"
)

// Ports of the in-process stack.
const (
	stackBlockerB = 1
	stackBlockerM = 2
	stackMapper   = 3
	stackVlmcd    = 4
)

// startAsyncStack runs a whole stack in this process on a new segment: a
// data blocker over data (asynchronous: READ and WRITE answered from its
// callbacks), a maps blocker over maps, the mapper and the composer
// (vlmcd), and returns a volume client of the composer. It stops when t
// ends.
func startAsyncStack(t *testing.T, data *memstore.Async, maps store.Store, blockSize uint32) *volclient.Client {
	t.Helper()
	seg := newSegment(t, "asyncstack", 64)
	t.Cleanup(func() { data.Close() }) // after the peers stopped, before the segment goes
	start := func(role string, port int, h peer.Handler) {
		p, err := peer.Start(peer.Options{Role: role, Segment: seg.Name(), PortStart: port, PortEnd: port,
			NrOps: 128, NrThreads: 4, Logger: slog.New(slog.DiscardHandler)}, h)
		if err != nil {
			t.Fatalf("start %s: %v", role, err)
		}
		t.Cleanup(p.Stop)
	}
	start("blockerb", stackBlockerB, blocker.New(data, "host-a"))
	start("blockerm", stackBlockerM, blocker.New(maps, "host-a"))
	m := mapper.New(volume.Options{Owner: "host-a", BlockSize: blockSize}, stackBlockerM, stackBlockerB)
	start("mapperd", stackMapper, m)
	t.Cleanup(m.Close) // its reaper, before its peer stops (cleanups run last first)
	start("vlmcd", stackVlmcd, composer.New(stackMapper, stackBlockerB))
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return volclient.New(c, stackVlmcd)
}

// The I/O goes to the composer without a session (as `vlmc` tools that
// open none do).

// volIO reads (read) or writes [off, off+len(p)) of volume or snapshot
// name through the composer, in requests of at most volclient.MaxIO.
func volIO(ctx context.Context, vc *volclient.Client, name string, p []byte, off uint64, write, fua bool) error {
	for done := 0; done < len(p); {
		n := min(len(p)-done, volclient.MaxIO)
		k := volclient.Call{Op: xseg.OpRead, Target: name, Offset: off + uint64(done), Size: uint64(n), BufLen: n}
		if write {
			k.Op = xseg.OpWrite
			if fua {
				k.Flags = xseg.FlagFUA
			}
			k.Fill = func(r *xseg.Request) { copy(r.Buffer(), p[done:done+n]) }
		} else {
			k.Got = func(r *xseg.Request) error { copy(p[done:done+n], r.Data()); return nil }
		}
		if err := vc.Do(ctx, k); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// readVolume reads the whole of volume or snapshot name.
func readVolume(t *testing.T, vc *volclient.Client, name string, size int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := make([]byte, size)
	if err := volIO(ctx, vc, name, p, 0, false, false); err != nil {
		t.Fatalf("read %q: %v", name, err)
	}
	return p
}

// wantSame fails t at the first byte where got and want differ.
func wantSame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < min(len(got), len(want)) && got[i] == want[i] {
		i++
	}
	t.Fatalf("%s: byte %d of %d differs", what, i, len(want))
}

// Volume geometry of the stack tests.
const (
	stackBlockSize = 64 << 10
	stackSize      = 4 << 20
	stackWriters   = 4
	stackWrites    = 24 // by each writer in each round
)

// writerIO reads (write false) or writes p at off of volume "vol" for
// writer w.
type writerIO func(ctx context.Context, w int, p []byte, off uint64, write, fua bool) error

// driveVolume writes volume "vol" of a stack in two rounds and takes a
// snapshot "snap" between them. In a round, writers on disjoint quarters
// of the volume each write (one in five with FUA) and read back a range
// of their quarter after each write, all at once; then flush() sends a
// FLUSH. Last, each writer makes one FUA write, with no FLUSH after. It
// returns what the volume and the snapshot must hold.
func driveVolume(t *testing.T, ctx context.Context, io writerIO, flush, snapshot func() error) (vol, snap []byte) {
	t.Helper()
	const quarter = stackSize / stackWriters
	model := make([]byte, stackSize)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	round := func(r int) {
		var wg sync.WaitGroup
		for w := range stackWriters {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(r*stackWriters+w)))
				lo := w * quarter
				for i := range stackWrites {
					n := 1 + rng.IntN(3*stackBlockSize/2) // up to three blocks, unaligned
					off := lo + rng.IntN(quarter-n)
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					if err := io(ctx, w, p, uint64(off), true, i%5 == 0); err != nil {
						t.Errorf("round %d writer %d: write [%d,+%d): %v", r, w, off, n, err)
						return
					}
					copy(model[off:], p) // this writer's quarter only
					rn := 1 + rng.IntN(2*stackBlockSize)
					roff := lo + rng.IntN(quarter-rn)
					got := make([]byte, rn)
					if err := io(ctx, w, got, uint64(roff), false, false); err != nil {
						t.Errorf("round %d writer %d: read [%d,+%d): %v", r, w, roff, rn, err)
						return
					}
					if !bytes.Equal(got, model[roff:roff+rn]) {
						t.Errorf("round %d writer %d: read [%d,+%d) after write %d differs from what was written", r, w, roff, rn, i)
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if err := flush(); err != nil {
			t.Fatalf("round %d: FLUSH: %v", r, err)
		}
	}
	round(0)
	if err := snapshot(); err != nil {
		t.Fatal(err)
	}
	snap = bytes.Clone(model)
	round(1)
	// Last, a FUA write by each writer, and no FLUSH: durable all the
	// same.
	rng := rand.New(rand.NewPCG(seed, 1<<32))
	for w := range stackWriters {
		n := 1 + rng.IntN(2*stackBlockSize)
		off := w*quarter + rng.IntN(quarter-n)
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if err := io(ctx, w, p, uint64(off), true, true); err != nil {
			t.Fatalf("writer %d: FUA write [%d,+%d): %v", w, off, n, err)
		}
		copy(model[off:], p)
	}
	return model, snap
}

// wantAsyncWrites checks that the data store served the writes of
// driveVolume, and reads, asynchronously.
func wantAsyncWrites(t *testing.T, data *memstore.Async) {
	t.Helper()
	if r, w := data.Started(); r == 0 || w < 2*stackWriters*stackWrites {
		t.Fatalf("the data store started %d reads and %d writes asynchronously: the data blocker did not take its asynchronous path", r, w)
	}
}

// TestAsyncStack drives a volume (driveVolume) through the composer, the
// mapper and a data blocker whose store ends READs and WRITEs in shuffled
// order, all in this process. A power cut after the last FUA writes
// (both stores crashed) and a new stack over what survived: the volume
// and the snapshot read as they were, every write answered before a
// FLUSH and every FUA write kept.
func TestAsyncStack(t *testing.T) {
	data := memstore.NewAsync(memstore.AsyncOptions{Workers: 4, MaxDelay: 200 * time.Microsecond})
	maps := memstore.New()
	t.Cleanup(func() { maps.Close() })
	vc := startAsyncStack(t, data, maps, stackBlockSize)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vc.Create(ctx, "vol", stackSize); err != nil {
		t.Fatal(err)
	}
	model, snap := driveVolume(t, ctx,
		func(ctx context.Context, _ int, p []byte, off uint64, write, fua bool) error {
			return volIO(ctx, vc, "vol", p, off, write, fua)
		},
		func() error { return vc.Do(ctx, volclient.Call{Op: xseg.OpFlush, Target: "vol"}) },
		func() error { return vc.Snapshot(ctx, "vol", "snap") })
	wantSame(t, "the volume read whole", readVolume(t, vc, "vol", stackSize), model)
	wantSame(t, "the snapshot read whole", readVolume(t, vc, "snap", stackSize), snap)
	wantAsyncWrites(t, data)

	// A power cut: what both stores keep; then a new stack over it.
	crashedData, crashedMaps := data.Crash(), maps.Crash()
	t.Cleanup(func() { crashedMaps.Close() })
	vc2 := startAsyncStack(t, crashedData, crashedMaps, stackBlockSize)
	wantSame(t, "after the crash, the volume", readVolume(t, vc2, "vol", stackSize), model)
	wantSame(t, "after the crash, the snapshot", readVolume(t, vc2, "snap", stackSize), snap)
}

// TestAsyncStackThroughProcesses is TestAsyncStack with mapperd and vlmcd
// as real processes, as `archipelago start` runs them, and sessions, as
// the block endpoint opens them, one per writer; only the two blockers
// run in this process, over memory stores (the data one asynchronous).
// The power cut SIGKILLs mapperd and vlmcd and crashes both stores; the
// blockers start again over what survived, then mapperd and vlmcd.
func TestAsyncStackThroughProcesses(t *testing.T) {
	seg := newSegment(t, "asyncprocs", 64)
	data := memstore.NewAsync(memstore.AsyncOptions{Workers: 4, MaxDelay: 200 * time.Microsecond})
	maps := memstore.New()
	// startBlockers serves the stores on ports 1 and 2 until stop.
	startBlockers := func(data *memstore.Async, maps *memstore.Store) (stop func()) {
		var stops []func()
		for _, b := range []struct {
			port int
			st   store.Store
		}{{stackBlockerB, data}, {stackBlockerM, maps}} {
			p, err := peer.Start(peer.Options{Role: fmt.Sprintf("blocker-%d", b.port), Segment: seg.Name(), PortStart: b.port, PortEnd: b.port,
				NrOps: 128, NrThreads: 4, Logger: slog.New(slog.DiscardHandler)}, blocker.New(b.st, "host-a"))
			if err != nil {
				t.Fatal(err)
			}
			stops = append(stops, sync.OnceFunc(p.Stop))
		}
		stop = func() {
			for _, s := range stops {
				s()
			}
			data.Close()
			maps.Close()
		}
		t.Cleanup(stop) // before the segment goes
		return stop
	}
	args := func(port int, extra ...string) []string {
		return append([]string{"--segment", seg.Name(), "--portno-start", fmt.Sprint(port), "--log-level", "1", "--nr-ops", "128", "--nr-threads", "16"}, extra...)
	}
	startProcs := func() []*testbin.Proc {
		procs := []*testbin.Proc{
			testbin.Start(t, "mapperd", args(stackMapper, "--blockerm-port", fmt.Sprint(stackBlockerM), "--blockerb-port", fmt.Sprint(stackBlockerB),
				"--host-id", "host-a", "--block-size", fmt.Sprint(stackBlockSize))...),
			testbin.Start(t, "vlmcd", args(stackVlmcd, "--mapper-port", fmt.Sprint(stackMapper), "--blocker-port", fmt.Sprint(stackBlockerB))...),
		}
		for _, port := range []int{stackMapper, stackVlmcd} {
			testutil.WaitFor(t, 15*time.Second, fmt.Sprintf("port %d bound", port), func() bool { _, ok := seg.Owner(port); return ok })
		}
		return procs
	}
	stopBlockers := startBlockers(data, maps)
	procs := startProcs()
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	vc := volclient.New(c, stackVlmcd)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vc.Create(ctx, "vol", stackSize); err != nil {
		t.Fatal(err)
	}
	sessions := make([]*volclient.Volume, stackWriters)
	for w := range sessions {
		if sessions[w], err = vc.OpenSession(ctx, "vol"); err != nil {
			t.Fatal(err)
		}
	}
	model, snap := driveVolume(t, ctx,
		func(ctx context.Context, w int, p []byte, off uint64, write, fua bool) error {
			if write {
				return sessions[w].WriteAt(ctx, p, off, fua)
			}
			return sessions[w].ReadAt(ctx, p, off)
		},
		func() error { return sessions[0].Flush(ctx) },
		func() error { return vc.Snapshot(ctx, "vol", "snap") })
	wantSame(t, "the volume read whole", readVolume(t, vc, "vol", stackSize), model)
	wantSame(t, "the snapshot read whole", readVolume(t, vc, "snap", stackSize), snap)
	wantAsyncWrites(t, data)

	// The power cut; the sessions die with it.
	for _, p := range procs {
		p.Kill()
	}
	crashedData, crashedMaps := data.Crash(), maps.Crash()
	stopBlockers()
	startBlockers(crashedData, crashedMaps)
	startProcs()
	wantSame(t, "after the crash, the volume", readVolume(t, vc, "vol", stackSize), model)
	wantSame(t, "after the crash, the snapshot", readVolume(t, vc, "snap", stackSize), snap)
	if _, w := crashedData.Started(); w != 0 {
		t.Fatalf("the crashed data store served %d writes: the reads after the crash wrote", w)
	}
}
