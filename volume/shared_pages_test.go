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

// TestUnlockedReaderCachesNoPageOfANewerSession: a reader without the
// lock whose header is a moment old finds, below a page the volume owns
// (read from storage, changed in place by a newer session), a fresh page
// of that session: it looks shared to the old header, but the session
// owns it and changes it in place. Kept in the engine's cache of shared
// pages, it went stale, and a later read of a snapshot taken after the
// session's next write through that page served the old entry: a block
// written before the snapshot read as zeros from it.
func TestUnlockedReaderCachesNoPageOfANewerSession(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e
	const (
		vol  = "vm"
		snap = "vm-snap"
		size = 64 << 20 // a tree of two levels at 64 KiB blocks
	)
	bs := uint64(modelBS)
	if err := a.Create(ctx, vol, size); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, a, v.dataStore(), vol, 0, fill('a', 4096)); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx, vol); err != nil { // the session ends
		t.Fatal(err)
	}
	b := engineAs(t, v, "host-b") // reads without the lock
	old, err := b.readHeader(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	// A new session of A: a fresh leaf page for block 300, linked from
	// the root page A owns (changed in place).
	if err := writeVol(ctx, a, v.dataStore(), vol, 300*bs, fill('b', 4096)); err != nil {
		t.Fatal(err)
	}
	// B's read with the header of a moment before reaches that leaf.
	pg := &pager{e: b, h: old, memo: make(map[pageKey]*page)}
	if _, err := pg.lookup(ctx, 300); err != nil {
		t.Fatal(err)
	}
	// A's session writes block 301 through the same leaf (in place), and
	// takes a snapshot: the leaf is the snapshot's too from now on.
	if err := writeVol(ctx, a, v.dataStore(), vol, 301*bs, fill('c', 4096)); err != nil {
		t.Fatal(err)
	}
	if err := a.Snapshot(ctx, vol, snap); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off  uint64
		want byte
	}{{0, 'a'}, {300 * bs, 'b'}, {301 * bs, 'c'}} {
		got, err := readVol(ctx, b, v.dataStore(), snap, tc.off, 4096)
		if err != nil || !bytes.Equal(got, fill(tc.want, 4096)) {
			t.Errorf("snapshot read by host-b at %d: %q, %v; want %q", tc.off, runs(got), err, tc.want)
		}
	}
}
