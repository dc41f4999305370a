package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
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

func twoSlots(t testing.TB, k kind, seqs [2]uint64, payload []byte) []byte {
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

// slotV1 is a slot as format version 1 wrote it.
func slotV1(k kind, seq uint64, payload []byte) []byte {
	b := must1(encodeSlot(k, seq, payload))
	binary.BigEndian.PutUint16(b[4:], 1)
	end := slotHeadLen + len(payload)
	binary.BigEndian.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
	return b
}

func TestDualSlot(t *testing.T) {
	k := kindEpoch
	newer, older := encodeEpoch(2), encodeEpoch(1)
	check := func(desc string, b []byte, seq uint64, payload []byte, stale, fix uint8) object {
		t.Helper()
		o, err := decodeObject(k, b)
		if err != nil || o.seq != seq || string(o.payload) != string(payload) || o.stale != stale || o.fix != fix {
			t.Fatalf("%s: seq %d payload %x stale %b fix %b (%v), want seq %d %x stale %b fix %b",
				desc, o.seq, o.payload, o.stale, o.fix, err, seq, payload, stale, fix)
		}
		return o
	}
	fails := func(desc string, b []byte, want error) {
		t.Helper()
		if _, err := decodeObject(k, b); !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", desc, err, want)
		}
	}
	b := twoSlots(t, k, [2]uint64{4, 4}, newer)
	check("both slots", b, 4, newer, 0, 0)
	// One damaged byte in either slot: the other one is read, and the
	// damaged one is to be rewritten.
	for i := range 2 {
		d := slices.Clone(b)
		d[i*k.slot+10] ^= 0xff
		if o := check(fmt.Sprintf("slot %d damaged", i), d, 4, newer, 1<<i, 1<<i); o.damage[i] == "" {
			t.Fatalf("slot %d damaged: not reported", i)
		}
		// Damaged version field: a damaged slot, not another version.
		d = slices.Clone(b)
		d[i*k.slot+5] = 9
		check(fmt.Sprintf("slot %d version damaged", i), d, 4, newer, 1<<i, 1<<i)
		// Damaged padding: read, and rewritten.
		d = slices.Clone(b)
		d[i*k.slot+k.slot-1] = 1
		check(fmt.Sprintf("slot %d padding damaged", i), d, 4, newer, 0, 1<<i)
	}
	// Both damaged: corrupt.
	d := slices.Clone(b)
	d[10] ^= 0xff
	d[k.slot+30] ^= 0xff
	fails("both damaged", d, errs.ErrCorrupt)
	// An update that wrote one slot: the newer state.
	b = twoSlots(t, k, [2]uint64{5, 4}, newer)
	copy(b[k.slot:], must1(encodeSlot(k, 4, older)))
	check("second write missing", b, 5, newer, 2, 2)
	b[20] ^= 1 // first write torn: the older state
	check("first write torn", b, 4, older, 1, 1)
	// The same sequence number with two payloads: corrupt.
	b = twoSlots(t, k, [2]uint64{4, 4}, newer)
	copy(b[k.slot:], must1(encodeSlot(k, 4, older)))
	fails("copies differ", b, errs.ErrCorrupt)
	// Creation writes slot 1 and then slot 0: slot 0 empty and slot 1
	// empty or torn is an object never created.
	b = make([]byte, 2*k.slot)
	fails("never written", b, errUncommitted)
	copy(b[k.slot:], "AGVE\x00\x02")
	fails("creation torn", b, errUncommitted)
	if _, err := decodeObject(k, b); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("uncommitted is not ErrNotFound: %v", err)
	}
	copy(b[k.slot:], must1(encodeSlot(k, 1, older)))
	check("second creation write missing", b, 1, older, 1, 1)
	// Slot 0 damaged and slot 1 empty (a truncated object): corrupt.
	b = twoSlots(t, k, [2]uint64{4, 4}, newer)
	clear(b[k.slot:])
	check("truncated to one slot", b, 4, newer, 2, 2)
	clear(b[30:])
	fails("truncated into slot 0", b, errs.ErrCorrupt)
	// Another version: ErrVersion, whether its checksum is as ours or not.
	b = twoSlots(t, k, [2]uint64{4, 4}, newer)
	copy(b[k.slot:], must1(encodeSlot(k, 5, newer)))
	binary.BigEndian.PutUint16(b[k.slot+4:], formatVersion+1)
	end := k.slot + slotHeadLen + len(newer)
	binary.BigEndian.PutUint32(b[end:], crc32.Checksum(b[k.slot:end], castagnoli))
	fails("a newer version in slot 1", b, errs.ErrVersion)
	b = twoSlots(t, k, [2]uint64{4, 4}, newer)
	binary.BigEndian.PutUint16(b[4:], formatVersion+1)
	binary.BigEndian.PutUint16(b[k.slot+4:], formatVersion+1)
	fails("a newer version, another layout", b, errs.ErrVersion)
}

// TestDualSlotVersion1: objects of format version 1 are read by its rule
// (the valid slot with the higher sequence number; slot i holds i-parity
// numbers) and are to be rewritten in today's version.
func TestDualSlotVersion1(t *testing.T) {
	k := kindEpoch
	newer, older := encodeEpoch(2), encodeEpoch(1)
	b := append(slotV1(k, 4, newer), slotV1(k, 3, older)...)
	o, err := decodeObject(k, b)
	if err != nil || o.seq != 4 || o.stale != 2 || o.fix != 3 || o.damage != [2]string{} {
		t.Fatalf("version 1: %+v %v", o, err)
	}
	d := slices.Clone(b)
	d[12] ^= 1
	o, err = decodeObject(k, d)
	if err != nil || o.seq != 3 || string(o.payload) != string(older) || o.stale != 1 || !strings.Contains(o.damage[0], "version 1") {
		t.Fatalf("version 1, newer slot damaged: %+v %v", o, err)
	}
	// A fresh version 1 page: slot 1 never written, not damage.
	b = append(slotV1(k, 0, newer), make([]byte, k.slot)...)
	if o, err := decodeObject(k, b); err != nil || o.seq != 0 || o.stale != 2 || o.damage != [2]string{} {
		t.Fatalf("version 1, slot 1 empty: %+v %v", o, err)
	}
	// Version 1 created slot 0 first: slot 0 torn and slot 1 empty is an
	// object never created.
	b[30] ^= 1
	if _, err := decodeObject(k, b); !errors.Is(err, errUncommitted) {
		t.Fatalf("version 1 creation torn: %v", err)
	}
	// Wrong parity: not trusted.
	b = append(slotV1(k, 1, newer), slotV1(k, 2, older)...)
	if _, err := decodeObject(k, b); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("wrong parity: %v", err)
	}
	// Half updated to version 2: the newer state.
	b = append(slotV1(k, 4, older), must1(encodeSlot(k, 5, newer))...)
	if o, err := decodeObject(k, b); err != nil || o.seq != 5 || o.stale != 1 || o.fix != 1 {
		t.Fatalf("version 1 and 2: %+v %v", o, err)
	}
	// Repaired: both hold the state, one in version 1.
	b = append(slotV1(k, 4, older), must1(encodeSlot(k, 4, older))...)
	if o, err := decodeObject(k, b); err != nil || o.seq != 4 || o.stale != 0 || o.fix != 1 {
		t.Fatalf("version 1 and 2, same state: %+v %v", o, err)
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
	flip(pageObj, int64(kindPage.slot)+40)
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
