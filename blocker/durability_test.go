package blocker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// The durability rule of the package documentation, checked in process: a
// blocker over a memstore serves port 1 of a segment, a client sends it
// requests, and memstore.Crash shows what a power cut would have left. The
// memstore keeps the least a correct store may keep, so what these tests
// see survive is what the rule promises, and what they see lost proves that
// the crash is real.

// inProcess is a blocker served on port 1 of a new segment by a peer in
// this process, and a client for it.
type inProcess struct {
	*filed
	h *switchable
}

// switchable serves with the blocker over the store of the current case,
// so that cases share one peer (and one segment) but not a store.
type switchable struct {
	b atomic.Pointer[blocker.Blocker]
}

func (s *switchable) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	return s.b.Load().Serve(ctx, p, r)
}

// use makes the blocker serve from st.
func (ip *inProcess) use(st *memstore.Store) { ip.h.b.Store(blocker.New(st, "test-ident")) }

// startInProcess starts the peer, serving from st.
func startInProcess(t *testing.T, st *memstore.Store) *inProcess {
	t.Helper()
	s := newSegment(t, "blockerdur", 16)
	h := &switchable{}
	ip := &inProcess{h: h}
	ip.use(st)
	p, err := peer.Start(peer.Options{
		Role: "blocker-test", Segment: s.Name(), PortStart: filedPort, PortEnd: filedPort,
		NrOps: 8, NrThreads: 2, Logger: slog.New(slog.DiscardHandler),
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ip.filed = &filed{t: t, seg: s, c: c}
	return ip
}

// content returns the object as a crash left it, or nil if it is missing.
func content(t *testing.T, st *memstore.Store, name string) []byte {
	t.Helper()
	ctx := context.Background()
	size, err := st.Stat(ctx, name)
	if errors.Is(err, errs.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if _, err := st.ReadAt(ctx, name, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWriteDurability(t *testing.T) {
	data := random(42, 8*kib)
	want := append(make([]byte, 4*kib), data...) // written at 4 KiB
	write := func(f *filed, name string, flags xseg.Flags) {
		f.ok(req{op: xseg.OpWrite, target: name, off: 4 * kib, data: data, flags: flags})
	}
	cases := []struct {
		name string
		// run writes object "obj" and does what follows.
		run      func(f *filed)
		survives bool
	}{
		{"FUA", func(f *filed) { write(f, "obj", xseg.FlagFUA) }, true},
		{"then FLUSH", func(f *filed) {
			write(f, "obj", 0)
			f.ok(req{op: xseg.OpFlush})
		}, true},
		{"then SYNC", func(f *filed) {
			write(f, "obj", 0)
			f.ok(req{op: xseg.OpSync})
		}, true},
		{"then PING with FLUSH flag", func(f *filed) {
			write(f, "obj", 0)
			f.ok(req{op: xseg.OpPing, flags: xseg.FlagFlush})
		}, true},
		{"then WRITE with FLUSH flag", func(f *filed) {
			write(f, "obj", 0)
			write(f, "other", xseg.FlagFlush)
		}, true},
		{"then READ with FLUSH flag", func(f *filed) {
			write(f, "obj", 0)
			f.ok(req{op: xseg.OpRead, target: "obj", size: 4 * kib, flags: xseg.FlagFlush})
		}, true},
		// Nothing made it durable: the crash loses it.
		{"plain", func(f *filed) { write(f, "obj", 0) }, false},
		{"then a plain WRITE", func(f *filed) {
			write(f, "obj", 0)
			write(f, "other", 0)
		}, false},
		// FUA makes only its own write durable; it is no flush.
		{"then a FUA WRITE of another object", func(f *filed) {
			write(f, "obj", 0)
			write(f, "other", xseg.FlagFUA)
		}, false},
		// The FLUSH flag flushes what came before the request, not the
		// request itself.
		{"with FLUSH flag", func(f *filed) { write(f, "obj", xseg.FlagFlush) }, false},
	}
	ip := startInProcess(t, memstore.New())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := memstore.New()
			ip.use(st)
			f := *ip.filed
			f.t = t
			c.run(&f)
			got := content(t, st.Crash(), "obj")
			switch {
			case c.survives && !bytes.Equal(got, want):
				t.Errorf("after the crash the object holds %d bytes, want the %d written", len(got), len(want))
			case !c.survives && got != nil:
				t.Errorf("after the crash the object holds %d bytes: the crash simulation lost nothing", len(got))
			}
		})
	}
}

// TestUnsyncedOverwriteIsLost: an answered but unsynced overwrite of durable
// data may be lost; with memstore the durable version comes back.
func TestUnsyncedOverwriteIsLost(t *testing.T) {
	st := memstore.New()
	f := startInProcess(t, st)
	v1, v2 := random(1, 4*kib), random(2, 4*kib)
	f.ok(req{op: xseg.OpWrite, target: "obj", data: v1, flags: xseg.FlagFUA})
	f.ok(req{op: xseg.OpWrite, target: "obj", data: v2})
	if got, _ := f.read("obj", 0, 4*kib); !bytes.Equal(got, v2) {
		t.Fatal("the overwrite does not read back before the crash")
	}
	if got := content(t, st.Crash(), "obj"); !bytes.Equal(got, v1) {
		t.Error("after the crash the object does not hold the durable version")
	}
	f.ok(req{op: xseg.OpSync})
	if got := content(t, st.Crash(), "obj"); !bytes.Equal(got, v2) {
		t.Error("after SYNC and a crash the object does not hold the overwrite")
	}
}

// TestMetadataDurability: COPY, TRUNCATE and DELETE are durable after a
// later SYNC, and may be lost before.
func TestMetadataDurability(t *testing.T) {
	ops := []struct {
		name string
		run  func(f *filed)
		// check tells whether the crashed store shows the operation done.
		done func(t *testing.T, st *memstore.Store) bool
	}{
		{"COPY", func(f *filed) {
			f.ok(req{op: xseg.OpCopy, target: "dst", p: &wire.Copy{Source: "src"}})
		}, func(t *testing.T, st *memstore.Store) bool { return content(t, st, "dst") != nil }},
		{"TRUNCATE", func(f *filed) {
			f.ok(req{op: xseg.OpTruncate, target: "src", off: 100})
		}, func(t *testing.T, st *memstore.Store) bool { return len(content(t, st, "src")) == 100 }},
		{"DELETE", func(f *filed) {
			f.ok(req{op: xseg.OpDelete, target: "src"})
		}, func(t *testing.T, st *memstore.Store) bool { return content(t, st, "src") == nil }},
	}
	ip := startInProcess(t, memstore.New())
	for _, op := range ops {
		for _, sync := range []bool{false, true} {
			name := op.name
			if sync {
				name += " then SYNC"
			}
			t.Run(name, func(t *testing.T) {
				st := memstore.New()
				ip.use(st)
				f := *ip.filed
				f.t = t
				f.ok(req{op: xseg.OpWrite, target: "src", data: random(3, 4*kib), flags: xseg.FlagFUA})
				op.run(&f)
				if sync {
					f.ok(req{op: xseg.OpSync})
				}
				if done := op.done(t, st.Crash()); done != sync {
					t.Errorf("after the crash the %s shows done=%v, want %v", op.name, done, sync)
				}
			})
		}
	}
}

// TestLockDurability: a lock is durable when ACQUIRE answers, and so is its
// release when RELEASE answers.
func TestLockDurability(t *testing.T) {
	st := memstore.New()
	f := startInProcess(t, st)
	ctx := context.Background()
	if rep := f.lock(xseg.OpAcquire, "vol_lock", "owner-1", xseg.FlagNoSync); rep.err != nil {
		t.Fatal(rep.err)
	}
	if owner, err := st.Crash().LockOwner(ctx, "vol_lock"); err != nil || owner != "owner-1" {
		t.Errorf("after the crash the lock is held by %q (%v), want owner-1", owner, err)
	}
	if rep := f.lock(xseg.OpRelease, "vol_lock", "owner-1", 0); rep.err != nil {
		t.Fatal(rep.err)
	}
	if owner, err := st.Crash().LockOwner(ctx, "vol_lock"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("after RELEASE and a crash the lock is held by %q (%v)", owner, err)
	}
}

// TestHashDurability: the content object that HASH names is durable when
// HASH answers, whether HASH stored it or found it (stored but not synced).
func TestHashDurability(t *testing.T) {
	ip := startInProcess(t, memstore.New())
	data := random(9, 5000)
	for _, stored := range []bool{false, true} {
		st := memstore.New()
		ip.use(st)
		ip.ok(req{op: xseg.OpWrite, target: "obj", data: data})
		if stored {
			// The content object exists already, unsynced.
			rep := ip.ok(req{op: xseg.OpHash, target: "obj"})
			var h wire.Hash
			if err := h.Unmarshal(rep.data); err != nil {
				t.Fatal(err)
			}
			st = memstore.New()
			ip.use(st)
			ip.ok(req{op: xseg.OpWrite, target: "obj", data: data})
			ip.ok(req{op: xseg.OpWrite, target: h.Hash, data: data})
		}
		rep := ip.ok(req{op: xseg.OpHash, target: "obj"})
		var h wire.Hash
		if err := h.Unmarshal(rep.data); err != nil {
			t.Fatal(err)
		}
		crashed := st.Crash()
		if got := content(t, crashed, h.Hash); !bytes.Equal(got, data) {
			t.Errorf("stored=%v: after the crash the content object holds %d bytes, want the %d hashed", stored, len(got), len(data))
		}
		if err := crashed.List(context.Background(), "", func(name string) error {
			if name != "obj" && name != h.Hash {
				t.Errorf("stored=%v: object %q left after the crash", stored, name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}
