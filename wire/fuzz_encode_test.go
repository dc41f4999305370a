package wire

import (
	"errors"
	"reflect"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// filler builds values from fuzz bytes: each field of a payload, in
// order, takes what it needs (strings a length byte, scaled, then bytes;
// slices a count byte; numbers their width). Past the end, zeroes.
type filler struct{ b []byte }

func (f *filler) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}

func (f *filler) uint(n int) uint64 {
	var v uint64
	for range n {
		v = v<<8 | uint64(f.byte())
	}
	return v
}

func (f *filler) fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		n := int(f.byte())
		if n >= 0xf0 { // now and then beyond the limits
			n = (n - 0xef) * 300
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a' + byte(i%26)
		}
		copy(b, f.b[:min(n, len(f.b))])
		f.b = f.b[min(n, len(f.b)):]
		v.SetString(string(b))
	case reflect.Bool:
		v.SetBool(f.byte()&1 != 0)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(f.uint(int(v.Type().Size())))
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		v.SetInt(int64(f.uint(int(v.Type().Size()))))
	case reflect.Slice:
		n := int(f.byte() % 8)
		if n == 0 {
			return // nil, as Decode leaves an empty list
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			f.fill(s.Index(i))
		}
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			f.fill(v.Index(i))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				f.fill(v.Field(i))
			}
		}
	}
}

// FuzzEncode builds a value of every kind from the fuzz bytes and checks
// the other direction of FuzzDecode: a value either encodes, and then
// decodes to an equal value (through Decode and its own type's
// Unmarshal), or is refused by the encoder with ErrInvalid or
// ErrTooLarge, never encoded into bytes that the decoder refuses.
func FuzzEncode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 'a', 'b', 'c', 0, 0, 0, 1, 0, 0, 0, 0, 2, 'h', '1'})
	f.Add([]byte{0xff, 0xf5, 2, 0, 1, 7})
	for _, tc := range samples {
		f.Add(tc.v.Marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for k := Kind(1); k < kindMax; k++ {
			if !k.Valid() {
				continue
			}
			p := New(k)
			(&filler{b: b}).fill(reflect.ValueOf(p).Elem())
			enc := p.Marshal()
			if enc == nil {
				_, err := p.MarshalTo(make([]byte, max(p.EncodedSize(), 0)))
				if !errors.Is(err, errs.ErrInvalid) && !errors.Is(err, errs.ErrTooLarge) {
					t.Fatalf("%v %+v: not encoded, error %v wraps neither ErrInvalid nor ErrTooLarge", k, p, err)
				}
				continue
			}
			if len(enc) != p.EncodedSize() {
				t.Fatalf("%v: %d bytes encoded, EncodedSize %d", k, len(enc), p.EncodedSize())
			}
			d, err := Decode(enc)
			if err != nil {
				t.Fatalf("%v %+v encodes to %x, which Decode refuses: %v", k, p, enc, err)
			}
			if !reflect.DeepEqual(d, p) {
				t.Fatalf("%v: %+v decodes as %+v", k, p, d)
			}
			q := New(k)
			if err := q.Unmarshal(enc); err != nil || !reflect.DeepEqual(q, p) {
				t.Fatalf("%v: %+v unmarshals as %+v, %v", k, p, q, err)
			}
		}
	})
}
