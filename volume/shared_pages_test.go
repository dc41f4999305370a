package volume

import (
	"bytes"
	"context"
	"testing"
)

// TestUnlockedReadsKeepSharedPages: a reader without the lock reads a
// clone's header every time, but the pages the clone shares with its
// snapshot only once (nothing writes them in place); the pages the clone
// owns, every time, so that another host's writes into them are seen.
func TestUnlockedReadsKeepSharedPages(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e
	const (
		origin = "image"
		snap   = "image-snap"
		clone  = "vm-disk"
		size   = 64 << 20 // a tree of two levels at 64 KiB blocks
	)
	if err := a.Create(ctx, origin, size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{0, 40 << 20} {
		if err := writeVol(ctx, a, v.dataStore(), origin, off, fill('i', 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Snapshot(ctx, origin, snap); err != nil {
		t.Fatal(err)
	}
	if err := a.Clone(ctx, snap, clone, size); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx, origin); err != nil {
		t.Fatal(err)
	}
	b := engineAs(t, v, "host-b") // reads without the lock
	reads := func(off uint64, want byte) int64 {
		t.Helper()
		v.plan.Reset()
		got, err := readVol(ctx, b, v.dataStore(), clone, off, 4096)
		if err != nil || !bytes.Equal(got, fill(want, 4096)) {
			t.Fatalf("clone at %d reads %q, %v", off, runs(got), err)
		}
		return v.plan.Counts().Reads
	}
	first := reads(40<<20, 'i')
	if again := reads(40<<20, 'i'); again >= first || again != 2 { // the header, the data
		t.Fatalf("a second read of the clone's shared block read %d objects (the first %d); want the header and the data", again, first)
	}
	// A's write into the clone makes its path owned: B reads it anew.
	if err := writeVol(ctx, a, v.dataStore(), clone, 40<<20, fill('c', 4096)); err != nil {
		t.Fatal(err)
	}
	reads(40<<20, 'c')
	if n := reads(40<<20, 'c'); n <= 2 {
		t.Fatalf("a read of the clone's owned block read %d objects: its pages must be read again", n)
	}
	if err := writeVol(ctx, a, v.dataStore(), clone, 40<<20, fill('d', 4096)); err != nil {
		t.Fatal(err)
	}
	reads(40<<20, 'd')
	reads(0, 'i')
}
