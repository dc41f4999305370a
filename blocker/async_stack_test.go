package blocker_test

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/composer"
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
	start("mapperd", stackMapper, mapper.New(volume.Options{Owner: "host-a", BlockSize: blockSize}, stackBlockerM, stackBlockerB))
	start("vlmcd", stackVlmcd, composer.New(stackMapper, stackBlockerB))
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return volclient.New(c, stackVlmcd)
}

// The I/O goes to the composer without a session (as `vlmc` tools that
// open none do): the mapper starts its reaper of dead sessions with the
// first session and never stops it, which in one process would outlive
// the peer and its segment.

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

// TestAsyncStack drives a volume through the composer, the mapper and a
// data blocker whose store ends READs and WRITEs in shuffled order: writers
// on disjoint quarters of the volume, each reading back what it wrote
// while the others write, a snapshot between two rounds, and FLUSH at the
// end of each. A power cut right after the last FLUSH (both stores
// crashed) and a new stack over what survived: the volume and the
// snapshot read as they were, every write answered before a FLUSH kept.
func TestAsyncStack(t *testing.T) {
	const (
		blockSize = 64 << 10
		size      = 4 << 20
		writers   = 4
		quarter   = size / writers
		writes    = 24
	)
	data := memstore.NewAsync(memstore.AsyncOptions{Workers: 4, MaxDelay: 200 * time.Microsecond})
	maps := memstore.New()
	t.Cleanup(func() { maps.Close() })
	vc := startAsyncStack(t, data, maps, blockSize)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vc.Create(ctx, "vol", size); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)

	// round writes and reads back concurrently, then flushes.
	round := func(r int) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(r*writers+w)))
				lo := w * quarter
				for i := range writes {
					n := 1 + rng.IntN(3*blockSize/2) // up to three blocks, unaligned
					off := lo + rng.IntN(quarter-n)
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					if err := volIO(ctx, vc, "vol", p, uint64(off), true, i%5 == 0); err != nil {
						t.Errorf("round %d writer %d: write [%d,+%d): %v", r, w, off, n, err)
						return
					}
					copy(model[off:], p) // this writer's quarter only
					rn := 1 + rng.IntN(2*blockSize)
					roff := lo + rng.IntN(quarter-rn)
					got := make([]byte, rn)
					if err := volIO(ctx, vc, "vol", got, uint64(roff), false, false); err != nil {
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
		if err := vc.Do(ctx, volclient.Call{Op: xseg.OpFlush, Target: "vol"}); err != nil {
			t.Fatalf("round %d: FLUSH: %v", r, err)
		}
	}
	round(0)
	if err := vc.Snapshot(ctx, "vol", "snap"); err != nil {
		t.Fatal(err)
	}
	snap := bytes.Clone(model)
	round(1)
	wantSame(t, "the volume read whole", readVolume(t, vc, "vol", size), model)
	wantSame(t, "the snapshot read whole", readVolume(t, vc, "snap", size), snap)
	if r, w := data.Started(); r == 0 || w < 2*writers*writes {
		t.Fatalf("the data store started %d reads and %d writes asynchronously: the data blocker did not take its asynchronous path", r, w)
	}

	// A power cut: what both stores keep; then a new stack over it.
	crashedData, crashedMaps := data.Crash(), maps.Crash()
	t.Cleanup(func() { crashedMaps.Close() })
	vc2 := startAsyncStack(t, crashedData, crashedMaps, blockSize)
	wantSame(t, "after the crash, the volume", readVolume(t, vc2, "vol", size), model)
	wantSame(t, "after the crash, the snapshot", readVolume(t, vc2, "snap", size), snap)
}
