package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// FuzzDecode checks that no input makes decoding panic, that every error
// wraps ErrInvalid or ErrVersion, and that whatever decodes re-encodes to
// the same bytes followed by zero padding only. The seeds (every sample,
// padded and cut) run under plain go test.
func FuzzDecode(f *testing.F) {
	for _, tc := range samples {
		b := tc.v.Marshal()
		f.Add(b)
		f.Add(append(append([]byte(nil), b...), 0, 0, 0, 0))
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{Magic})
	f.Add([]byte{Magic, byte(KindMapReply), Version, 0, 0xff, 0xff, 0xff, 0xff})
	// The retired kind 12 (Create), with a body it once had.
	f.Add([]byte{Magic, 12, Version, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{Magic, byte(KindResize), 2, 0})

	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte(nil), b...)
		p, err := Decode(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("Decode modified its input")
		}
		if err != nil {
			if !errors.Is(err, errs.ErrInvalid) && !errors.Is(err, errs.ErrVersion) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrVersion", err)
			}
		} else {
			checkCanonical(t, p, b)
		}
		// Every type must survive every input too, and agree with Decode.
		for k := Kind(1); k < kindMax; k++ {
			if !k.Valid() {
				continue
			}
			q := New(k)
			err := q.Unmarshal(b)
			if err == nil {
				if p == nil || p.Kind() != k {
					t.Fatalf("%v.Unmarshal accepted what Decode refused or read as %v", k, p)
				}
				checkCanonical(t, q, b)
			}
		}
	})
}

func checkCanonical(t *testing.T, p Payload, b []byte) {
	t.Helper()
	enc := p.Marshal()
	if enc == nil {
		_, err := p.MarshalTo(make([]byte, p.EncodedSize()))
		t.Fatalf("%v decoded but does not encode: %v", p.Kind(), err)
	}
	if len(enc) > len(b) || !bytes.Equal(enc, b[:len(enc)]) {
		t.Fatalf("%v re-encodes to %x, input %x", p.Kind(), enc, b)
	}
	if !bytes.Equal(b[len(enc):], make([]byte, len(b)-len(enc))) {
		t.Fatalf("%v accepted non-zero padding %x", p.Kind(), b[len(enc):])
	}
}
