package composer_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/composer"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestWriteRefusesReadOnlySegment: vlmcd never writes in place into an
// object the mapper marks read-only for a write (one the volume does not
// own: a snapshot's, or a new holder's after a forced unlock), whatever
// the mapper answered; the write fails as damage. The mapper here answers
// so on purpose.
func TestWriteRefusesReadOnlySegment(t *testing.T) {
	s := testbin.Segment(t, "readonly", 16)
	var blockerWrites atomic.Int32
	start := func(port int, h peer.Handler) {
		p, err := peer.Start(peer.Options{Role: t.Name(), Segment: s.Name(), PortStart: port, PortEnd: port, NrOps: 16, NrThreads: 4,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
	}
	start(2, peer.HandlerFunc(func(_ context.Context, _ *peer.Peer, r *xseg.Request) error { // the mapper
		switch r.Op() {
		case xseg.OpInfo:
			return peer.Reply(r, &wire.VolumeInfo{Size: 1 << 20, BlockSize: 1 << 20})
		case xseg.OpMapW, xseg.OpMapR:
			return peer.Reply(r, &wire.MapReply{Pieces: []wire.MapPiece{
				{Object: "shared-object", Offset: r.Offset(), Size: r.Size(), Flags: wire.PieceReadOnly},
			}})
		}
		return nil
	}))
	start(3, peer.HandlerFunc(func(_ context.Context, _ *peer.Peer, r *xseg.Request) error { // the data blocker
		if r.Op() == xseg.OpWrite {
			blockerWrites.Add(1)
		}
		r.SetServiced(r.Size())
		return nil
	}))
	start(4, composer.New(2, 3))

	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r, err := c.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	r.SetOp(xseg.OpWrite)
	if err := r.SetTarget("vol"); err != nil {
		t.Fatal(err)
	}
	r.SetSize(4096)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := c.Call(ctx, r, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Put(rep)
	if err := rep.Err(); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("a write mapped to a read-only object: %v, want ErrCorrupt", err)
	}
	if n := blockerWrites.Load(); n != 0 {
		t.Errorf("vlmcd wrote %d times into an object the volume does not own", n)
	}
}
