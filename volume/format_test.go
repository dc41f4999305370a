package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

func testHeader() *header {
	return &header{
		id: [16]byte{1, 2, 3}, flags: flagSnapshot, size: 5 << 30, blockSize: 4 << 20,
		root:     entry{present: true, ref: ref{prefix: 1, epoch: 7}},
		spans:    []span{{prefix: 1, from: 3, to: 9}},
		parent:   "parent-volume",
		prefixes: []string{"grand-parent", "parent-volume"},
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := testHeader()
	got, err := decodeHeader(encodeHeader(h))
	if err != nil {
		t.Fatal(err)
	}
	if got.id != h.id || got.flags != h.flags || got.size != h.size || got.root != h.root ||
		!slices.Equal(got.spans, h.spans) || !slices.Equal(got.prefixes, h.prefixes) || got.parent != h.parent {
		t.Fatalf("round trip: %+v, want %+v", got, h)
	}
	bad := encodeHeader(h)
	for _, b := range [][]byte{bad[:len(bad)-1], append(slices.Clone(bad), 0)} {
		if _, err := decodeHeader(b); !errors.Is(err, errs.ErrCorrupt) {
			t.Errorf("bad length: %v", err)
		}
	}
}

func twoSlots(t *testing.T, k kind, seqs [2]uint64, payload []byte) []byte {
	b := make([]byte, 2*k.slot)
	for i, seq := range seqs {
		s, err := encodeSlot(k, seq, payload)
		if err != nil {
			t.Fatal(err)
		}
		copy(b[i*k.slot:], s)
	}
	return b
}

func TestDualSlot(t *testing.T) {
	k := kindEpoch
	newer, older := encodeEpoch(2), encodeEpoch(1)
	b := twoSlots(t, k, [2]uint64{4, 1}, newer)
	copy(b[k.slot:], must1(encodeSlot(k, 1, older)))
	seq, p, err := decodeObject(k, b)
	if err != nil || seq != 4 || string(p) != string(newer) {
		t.Fatalf("newest slot: seq %d %x %v", seq, p, err)
	}
	// A torn write of the newer slot falls back to the older.
	b[10] ^= 0xff
	if seq, _, err := decodeObject(k, b); err != nil || seq != 1 {
		t.Fatalf("after damage to slot 0: seq %d %v", seq, err)
	}
	// Both damaged: corrupt.
	b[k.slot+30] ^= 0xff
	if _, _, err := decodeObject(k, b); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("both damaged: %v", err)
	}
	// Slot 0 torn on creation, slot 1 never written: uncommitted.
	b = make([]byte, 2*k.slot)
	copy(b, "AGVE\x00\x01")
	if _, _, err := decodeObject(k, b); !errors.Is(err, errUncommitted) || !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("uncommitted: %v", err)
	}
	// Another version: ErrVersion.
	b = twoSlots(t, k, [2]uint64{0, 1}, newer)
	binary.BigEndian.PutUint16(b[4:], 2)
	if _, _, err := decodeObject(k, b); !errors.Is(err, errs.ErrVersion) {
		t.Fatalf("version 2: %v", err)
	}
	// A slot whose sequence number has the wrong parity is not trusted.
	b = twoSlots(t, k, [2]uint64{1, 2}, newer)
	if _, _, err := decodeObject(k, b); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("wrong parity: %v", err)
	}
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestPageFormat(t *testing.T) {
	p := &page{pageKey: pageKey{2, 9}}
	p.e[0] = entry{present: true, ref: ref{prefix: 3, epoch: 1 << 40}}
	p.e[255] = entry{present: true, ref: ref{prefix: 0, epoch: 1}}
	b := encodePage(p)
	if len(b) != pagePayloadLen || slotHeadLen+len(b)+slotCRCLen > kindPage.slot {
		t.Fatalf("page payload %d bytes", len(b))
	}
	got, err := decodePage(b, p.pageKey)
	if err != nil || got.e != p.e {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := decodePage(b, pageKey{2, 10}); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("page at the wrong position: %v", err)
	}
	b[16] = 0x80 // unknown entry flag
	if _, err := decodePage(b, p.pageKey); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("bad entry flag: %v", err)
	}
}

// TestDamagedStorage: the engine reports damage as ErrCorrupt and another
// version as ErrVersion, lists a damaged volume and can remove it.
func TestDamagedStorage(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	e := v.e
	for _, n := range []string{"damaged-vol", "future-vol", "page-damaged"} {
		if err := e.Create(ctx, n, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeVol(ctx, e, v.dataStore(), "page-damaged", 0, fill('x', 10)); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx, "page-damaged"); err != nil {
		t.Fatal(err)
	}
	damage := func(name string, off int64, b []byte) {
		if err := v.maps.WriteAt(ctx, name, b, off, true); err != nil {
			t.Fatal(err)
		}
	}
	// flip inverts a byte, so that it surely changes (a byte written as a
	// constant may already hold it: some header bytes are random).
	flip := func(name string, off int64) {
		b := make([]byte, 1)
		if _, err := v.maps.ReadAt(ctx, name, b, off); err != nil {
			t.Fatal(err)
		}
		damage(name, off, []byte{^b[0]})
	}
	flip("damaged-vol", 30)
	flip("damaged-vol", int64(kindHeader.slot)+30)
	damage("future-vol", 4, []byte{0, 9})
	damage("future-vol", int64(kindHeader.slot)+4, []byte{0, 9})
	var pageObj string
	_ = v.maps.List(ctx, "page-damaged_", func(n string) error {
		if isPageForm(n) {
			pageObj = n
		}
		return nil
	})
	flip(pageObj, 40)
	if _, err := e.Info(ctx, "damaged-vol"); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("damaged header: %v", err)
	}
	if _, err := e.Info(ctx, "future-vol"); !errors.Is(err, errs.ErrVersion) {
		t.Errorf("header of another version: %v", err)
	}
	if _, err := e.MapRead(ctx, "page-damaged", 0, 10); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("damaged page: %v", err)
	}
	var names []string
	_ = e.List(ctx, func(n string) error { names = append(names, n); return nil })
	if !slices.Equal(names, []string{"damaged-vol", "future-vol", "page-damaged"}) {
		t.Errorf("list = %q", names)
	}
	if err := e.Remove(ctx, "damaged-vol"); err != nil {
		t.Errorf("remove damaged: %v", err)
	}
	if err := e.Remove(ctx, "future-vol"); !errors.Is(err, errs.ErrVersion) {
		t.Errorf("remove of another version: %v", err)
	}
}
