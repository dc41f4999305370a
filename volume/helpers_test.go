package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// env is an engine over two memory stores seen through one fault plan.
type env struct {
	maps, data *memstore.Store
	plan       *faultstore.Plan
	e          *Engine
	owner      string
	bs         uint32
	log        *slog.Logger // the engine's; nil: slog.Default()
}

func newEnv(t testing.TB, bs uint32) *env {
	t.Helper()
	v := &env{maps: memstore.New(), data: memstore.New(), owner: "host-a", bs: bs}
	v.restart(t)
	return v
}

// restart replaces the engine (as after a process restart) over the same
// stores, with a fresh plan.
func (v *env) restart(t testing.TB) {
	t.Helper()
	v.plan = faultstore.NewPlan(1)
	e, err := New(faultstore.Wrap(v.maps, v.plan), faultstore.Wrap(v.data, v.plan),
		Options{Owner: v.owner, BlockSize: v.bs, Logger: v.log})
	if err != nil {
		t.Fatal(err)
	}
	e.pollMin, e.pollMax = 50*time.Microsecond, time.Millisecond
	e.fenceWait = 0 // a forced unlock fences at once (fence_test.go runs the real wait)
	v.e = e
}

// crash keeps only what the stores made durable and restarts.
func (v *env) crash(t testing.TB) {
	t.Helper()
	v.maps, v.data = v.maps.Crash(), v.data.Crash()
	v.restart(t)
}

// writeVol maps [off, off+len(p)) for writing and writes p into the
// objects with FUA, as the volume composer does.
func writeVol(ctx context.Context, e *Engine, data store.Store, name string, off uint64, p []byte) error {
	segs, err := e.MapWrite(ctx, name, off, uint64(len(p)))
	if err != nil {
		return err
	}
	for _, s := range segs {
		if s.Zero || s.ReadOnly || s.Object == "" {
			return fmt.Errorf("MapWrite returned a segment not writable: %+v", s)
		}
		if err := data.WriteAt(ctx, s.Object, p[:s.Size], int64(s.Offset), true); err != nil {
			return err
		}
		p = p[s.Size:]
	}
	return nil
}

// readVol reads [off, off+n) through MapRead; zero segments, missing
// objects and bytes past an object's end read as zeros.
func readVol(ctx context.Context, e *Engine, data store.Store, name string, off, n uint64) ([]byte, error) {
	segs, err := e.MapRead(ctx, name, off, n)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, n)
	for _, s := range segs {
		b := make([]byte, s.Size)
		if !s.Zero {
			if _, err := data.ReadAt(ctx, s.Object, b, int64(s.Offset)); err != nil && !errors.Is(err, errs.ErrNotFound) {
				return nil, err
			}
		}
		out = append(out, b...)
	}
	if uint64(len(out)) != n {
		return nil, fmt.Errorf("MapRead covered %d bytes of %d", len(out), n)
	}
	return out, nil
}

func (v *env) dataStore() store.Store { return faultstore.Wrap(v.data, v.plan) }

// runs compresses bytes to "a*4096 .*100" (zero bytes print as '.').
func runs(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] == b[i] {
			j++
		}
		c := b[i]
		if c == 0 {
			c = '.'
		}
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%c*%d", c, j-i)
		i = j
	}
	return sb.String()
}
