package volume

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Fuzz targets of the map object decoders (format.go). Seeds: objects
// built here and the objects of the format fixtures (testdata/format-v*).
// Each decoder must not panic on any input; what it accepts must encode
// back to the same bytes and decode again to the same value.

// fixtureObjects returns the map objects of the format fixtures.
func fixtureObjects(f *testing.F) [][]byte {
	files, err := filepath.Glob("testdata/format-v*/maps/*")
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

var fuzzKinds = []kind{kindHeader, kindPage, kindEpoch}

func kindByMagic(b []byte) byte {
	for i, k := range fuzzKinds {
		if len(b) >= 4 && bytes.Equal(b[:4], k.magic[:]) {
			return byte(i)
		}
	}
	return 0
}

func seedPage() *page {
	p := &page{pageKey: pageKey{1, 3}}
	p.e[0] = entry{present: true, ref: ref{prefix: 2, epoch: 9}}
	p.e[200] = entry{present: true, ref: ref{prefix: 0, epoch: 1 << 50}}
	return p
}

// FuzzDecodeObject: the dual-slot decoder on any bytes, as any kind.
func FuzzDecodeObject(f *testing.F) {
	for _, b := range fixtureObjects(f) {
		f.Add(kindByMagic(b), b)
	}
	f.Add(byte(0), twoSlots(f, kindHeader, [2]uint64{3, 3}, encodeHeader(testHeader())))
	f.Add(byte(1), twoSlots(f, kindPage, [2]uint64{0, 1}, encodePage(seedPage())))
	f.Add(byte(2), twoSlots(f, kindEpoch, [2]uint64{7, 6}, encodeEpoch(5)))
	f.Add(byte(2), append(slotV1(kindEpoch, 2, encodeEpoch(1)), slotV1(kindEpoch, 1, encodeEpoch(0))...))
	f.Add(byte(2), make([]byte, 128))
	f.Fuzz(func(t *testing.T, which byte, in []byte) {
		k := fuzzKinds[int(which)%len(fuzzKinds)]
		b := make([]byte, 2*k.slot)
		copy(b, in)
		o, err := decodeObject(k, b)
		if err != nil {
			return
		}
		if len(o.payload) > k.slot-slotHeadLen-slotCRCLen || o.stale == 3 || o.fix&o.stale != o.stale {
			t.Fatalf("decoded %+v", o)
		}
		// What was read, written as today's version, reads the same, with
		// nothing to fix.
		s, err := encodeSlot(k, o.seq, o.payload)
		if err != nil {
			t.Fatal(err)
		}
		o2, err := decodeObject(k, append(s, s...))
		if err != nil || o2.seq != o.seq || !bytes.Equal(o2.payload, o.payload) || o2.stale != 0 || o2.fix != 0 {
			t.Fatalf("round trip: %+v %v, want seq %d payload %x", o2, err, o.seq, o.payload)
		}
	})
}

// FuzzDecodeHeader: the header payload decoder.
func FuzzDecodeHeader(f *testing.F) {
	for _, b := range fixtureObjects(f) {
		if o, err := decodeObject(kindHeader, pad(b, 2*kindHeader.slot)); err == nil {
			f.Add(o.payload)
		}
	}
	f.Add(encodeHeader(testHeader()))
	h := testHeader()
	h.flags, h.link = flagRenaming, "renamed-to"
	h.spans = append(h.spans, span{prefix: 0, from: 1, to: 2})
	f.Add(encodeHeader(h))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			return
		}
		enc := encodeHeader(h)
		if !bytes.Equal(enc, b) {
			t.Fatalf("encode(decode(b)) = %x, want %x", enc, b)
		}
		h2, err := decodeHeader(enc)
		if err != nil || !reflect.DeepEqual(h2, h) {
			t.Fatalf("decode(encode(h)) = %+v %v, want %+v", h2, err, h)
		}
	})
}

// FuzzDecodePage: the map page payload decoder, at any position.
func FuzzDecodePage(f *testing.F) {
	for _, b := range fixtureObjects(f) {
		if o, err := decodeObject(kindPage, pad(b, 2*kindPage.slot)); err == nil {
			f.Add(o.payload[0], o.payload[8:16], o.payload)
		}
	}
	p := seedPage()
	f.Add(p.level, encodeEpoch(p.index), encodePage(p))
	f.Fuzz(func(t *testing.T, level byte, index []byte, b []byte) {
		var key pageKey
		key.level = level
		for _, c := range index {
			key.index = key.index<<8 | uint64(c)
		}
		p, err := decodePage(b, key)
		if err != nil {
			return
		}
		enc := encodePage(p)
		if !bytes.Equal(enc, b) {
			t.Fatalf("encode(decode(b)) differs")
		}
		p2, err := decodePage(enc, key)
		if err != nil || !reflect.DeepEqual(p2, p) {
			t.Fatalf("decode(encode(p)) = %+v %v", p2, err)
		}
	})
}

// FuzzDecodeEpoch: the epoch record payload decoder.
func FuzzDecodeEpoch(f *testing.F) {
	f.Add(encodeEpoch(1))
	f.Add(encodeEpoch(1 << 63))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEpoch(b)
		if err != nil {
			if len(b) == 8 {
				t.Fatalf("8 bytes refused: %v", err)
			}
			return
		}
		if enc := encodeEpoch(e); !bytes.Equal(enc, b) {
			t.Fatalf("encode(decode(%x)) = %x", b, enc)
		}
	})
}

func pad(b []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}
