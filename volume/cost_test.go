package volume

import (
	"context"
	"testing"
)

// TestMapWriteCount counts the map writes (all FUA) of first writes to
// blocks of a 1 TiB volume of 4 MiB blocks (a tree of height 3), as
// docs/maps.md ("Figures") gives them: every update of a dual-slot object
// is two writes, a fresh page one, and a page changed in place is written
// alone (its owned path to the root does not change).
func TestMapWriteCount(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, DefaultBlockSize)
	if err := v.e.Create(ctx, "count-volume", 1<<40); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Open(ctx, "count-volume"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what  string
		block uint64
		want  int64
	}{
		// The session: epoch record and header (2 + 2); three fresh
		// pages (3); the header for the new root (2).
		{"first write of the session", 0, 9},
		// The leaf, in place.
		{"a block of the same leaf", 1, 2},
		// A fresh leaf and level 1 page, the root in place.
		{"a block under another level 1 page", 1 << 17, 4},
	} {
		v.plan.Reset()
		segs, err := v.e.MapWrite(ctx, "count-volume", c.block*DefaultBlockSize, 4096)
		if err != nil || len(segs) != 1 {
			t.Fatalf("%s: %v %v", c.what, segs, err)
		}
		if n := v.plan.Counts(); n.FUAWrites != c.want || n.Writes != 0 {
			t.Errorf("%s: %d FUA and %d other map writes, want %d FUA", c.what, n.FUAWrites, n.Writes, c.want)
		}
	}
}
