package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

const zeroHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

var (
	longName  = strings.Repeat("n", MaxNameLen)
	longOwner = strings.Repeat("o", MaxOwnerLen)
)

// samples are valid values of every kind: the round-trip table, the seed
// corpus of FuzzDecode and the source of every truncation.
var samples = []struct {
	name string
	v    Payload
}{
	{"mapreply/empty", &MapReply{}},
	{"mapreply/one", &MapReply{Pieces: []MapPiece{
		{Object: "vol1_0000000000000001_0000000000000000", Offset: 512, Size: 4096},
	}}},
	{"mapreply/mixed", &MapReply{Pieces: []MapPiece{
		{Object: "vol1_0000000000000001_0000000000000000", Offset: 4<<20 - 512, Size: 512, Flags: PieceReadOnly},
		{Size: 4 << 20, Flags: PieceZero},
		{Size: 4 << 20, Flags: PieceZero | PieceReadOnly},
		{Object: zeroHash, Offset: 0, Size: 1},
		{Object: longName, Offset: 1<<64 - 2, Size: 1},
	}}},
	{"clone/blank", &Clone{Size: 10 << 30}},
	{"clone/parent", &Clone{Parent: "img-debian-12", Owner: "host1_4"}},
	{"clone/long", &Clone{Parent: longName, Size: 1<<64 - 1, Owner: longOwner}},
	{"snapshot", &Snapshot{Name: "vol1-snap-2015", Owner: "host1_4"}},
	{"snapshot/empty", &Snapshot{}},
	{"rename", &Rename{NewName: "vol2-renamed", Owner: "host2_7"}},
	{"copy", &Copy{Source: "vol1_0000000000000001_0000000000000003"}},
	{"copy/empty", &Copy{}},
	{"hash", &Hash{Hash: zeroHash}},
	{"hash/size", &Hash{Hash: strings.Repeat("0123456789abcdef", 4), Size: 4 << 20}},
	{"objectinfo", &ObjectInfo{Size: 4 << 20}},
	{"objectinfo/zero", &ObjectInfo{}},
	{"volumeinfo", &VolumeInfo{Size: 100 << 30, BlockSize: 4 << 20, Flags: VolReadOnly | VolSnapshot,
		Epoch: 3, Parent: "img-debian-12", LockOwner: "host1_4"}},
	{"volumeinfo/empty", &VolumeInfo{}},
	{"lock/self", &Lock{}},
	{"lock/owner", &Lock{Owner: "host1_4"}},
	{"lockreply", &LockReply{Owner: longOwner}},
	{"resize", &Resize{Size: 200 << 30, Owner: "host1_4"}},
	{"resize/force", &Resize{Size: 1 << 30, Force: true}},
	{"list", &List{Prefix: "vol", After: "vol_0001"}},
	{"list/empty", &List{}},
	{"names", &Names{Names: []string{"a", longName}, More: true}},
	{"names/empty", &Names{}},
	{"extents", &Extents{Extents: []Extent{{0, 4 << 20}, {12 << 20, 1}}}},
	{"extents/empty", &Extents{}},
	{"errortext", &ErrorText{Message: `volume name "ab" is shorter than 6 bytes: invalid argument`}},
	{"session", &Session{Handle: 1<<40 + 3, Flags: SessionWrite}},
	{"session/reply", &Session{Handle: 9, Flags: SessionWrite, ID: "0123456789abcdef0123456789abcdef"}},
	{"doc", &Doc{Body: []byte(`{"volumes":["a","b"],"dry_run":true}`)}},
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range samples {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.v.Marshal()
			if b == nil {
				_, err := tc.v.MarshalTo(make([]byte, tc.v.EncodedSize()))
				t.Fatalf("Marshal: nil (%v)", err)
			}
			if len(b) != tc.v.EncodedSize() {
				t.Fatalf("len %d, EncodedSize %d", len(b), tc.v.EncodedSize())
			}
			if k, err := PeekKind(b); err != nil || k != tc.v.Kind() {
				t.Fatalf("PeekKind = %v, %v; want %v", k, err, tc.v.Kind())
			}
			got := New(tc.v.Kind())
			if err := got.Unmarshal(b); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, tc.v) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.v)
			}
			any, err := Decode(b)
			if err != nil || !reflect.DeepEqual(any, tc.v) {
				t.Fatalf("Decode = %+v, %v", any, err)
			}

			// MarshalTo into a larger buffer writes the same bytes and
			// nothing past them.
			big := bytes.Repeat([]byte{0xEE}, len(b)+16)
			n, err := tc.v.MarshalTo(big)
			if err != nil || n != len(b) || !bytes.Equal(big[:n], b) {
				t.Fatalf("MarshalTo = %d, %v; bytes %x, want %x", n, err, big[:n], b)
			}
			if !bytes.Equal(big[n:], bytes.Repeat([]byte{0xEE}, 16)) {
				t.Fatalf("MarshalTo wrote past the payload: %x", big[n:])
			}
		})
	}
}

func TestZeroPadding(t *testing.T) {
	for _, tc := range samples {
		t.Run(tc.name, func(t *testing.T) {
			b := append(tc.v.Marshal(), make([]byte, 4096)...)
			got := New(tc.v.Kind())
			if err := got.Unmarshal(b); err != nil {
				t.Fatalf("zero padding refused: %v", err)
			}
			if !reflect.DeepEqual(got, tc.v) {
				t.Fatalf("got %+v, want %+v", got, tc.v)
			}
			for _, at := range []int{tc.v.EncodedSize(), len(b) - 1} {
				g := append([]byte(nil), b...)
				g[at] = 1
				err := New(tc.v.Kind()).Unmarshal(g)
				if !errors.Is(err, errs.ErrInvalid) {
					t.Fatalf("garbage at %d: err %v, want ErrInvalid", at, err)
				}
			}
		})
	}
}

// TestUnmarshalDoesNotAlias: the buffer usually lives in the segment and is
// reused, so decoded strings must be copies.
func TestUnmarshalDoesNotAlias(t *testing.T) {
	v := &Names{Names: []string{"abcdef", "ghijkl"}}
	b := v.Marshal()
	var got Names
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !reflect.DeepEqual(&got, v) {
		t.Fatalf("decoded value changed with the buffer: %+v", got)
	}
}

func TestTruncated(t *testing.T) {
	for _, tc := range samples {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.v.Marshal()
			for n := 0; n < len(b); n++ {
				// A receiver holding another value must be left alone.
				got := New(tc.v.Kind())
				if err := got.Unmarshal(samplesOf(tc.v.Kind())); err != nil {
					t.Fatal(err)
				}
				before := reflect.ValueOf(got).Elem().Interface()
				err := got.Unmarshal(b[:n])
				if !errors.Is(err, errs.ErrInvalid) {
					t.Fatalf("%d of %d bytes: err %v, want ErrInvalid", n, len(b), err)
				}
				if !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), before) {
					t.Fatalf("%d of %d bytes: failed Unmarshal changed the receiver", n, len(b))
				}
				if p, err := Decode(b[:n]); err == nil {
					t.Fatalf("Decode of %d of %d bytes = %+v", n, len(b), p)
				}
			}
		})
	}
}

// samplesOf returns the encoding of the first sample of kind k.
func samplesOf(k Kind) []byte {
	for _, tc := range samples {
		if tc.v.Kind() == k {
			return tc.v.Marshal()
		}
	}
	panic("no sample of kind " + k.String())
}

func TestMarshalToNoSpace(t *testing.T) {
	for _, tc := range samples {
		t.Run(tc.name, func(t *testing.T) {
			for n := 0; n < tc.v.EncodedSize(); n++ {
				b := bytes.Repeat([]byte{0xEE}, n)
				m, err := tc.v.MarshalTo(b)
				if m != 0 || !errors.Is(err, errs.ErrNoSpace) {
					t.Fatalf("buffer of %d: %d, %v; want ErrNoSpace", n, m, err)
				}
				if !bytes.Equal(b, bytes.Repeat([]byte{0xEE}, n)) {
					t.Fatalf("buffer of %d written on failure", n)
				}
			}
		})
	}
}

func TestHeaderErrors(t *testing.T) {
	good := (&Clone{Parent: "parent", Owner: "o"}).Marshal()
	with := func(i int, x byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = x
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"nil", nil, errs.ErrInvalid},
		{"short", good[:3], errs.ErrInvalid},
		{"zeros", make([]byte, 64), errs.ErrInvalid},
		{"magic", with(0, 0xA6), errs.ErrInvalid},
		{"kind 0", with(1, 0), errs.ErrInvalid},
		{"kind unknown", with(1, byte(kindMax)), errs.ErrInvalid},
		{"kind retired", with(1, 12), errs.ErrInvalid},
		{"kind 255", with(1, 255), errs.ErrInvalid},
		{"version 0", with(2, 0), errs.ErrVersion},
		{"version 2", with(2, 2), errs.ErrVersion},
		{"version 255", with(2, 255), errs.ErrVersion},
		{"reserved", with(3, 1), errs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, err := PeekKind(tc.b); k != 0 || !errors.Is(err, tc.want) {
				t.Errorf("PeekKind = %v, %v; want %v", k, err, tc.want)
			}
			if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v; want %v", err, tc.want)
			}
			var c Clone
			if err := c.Unmarshal(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("Unmarshal: %v; want %v", err, tc.want)
			}
		})
	}
}

func TestWrongKind(t *testing.T) {
	for _, tc := range samples {
		b := tc.v.Marshal()
		for k := Kind(1); k < kindMax; k++ {
			if k == tc.v.Kind() || !k.Valid() {
				continue
			}
			if err := New(k).Unmarshal(b); !errors.Is(err, errs.ErrInvalid) {
				t.Errorf("%s into %v: err %v, want ErrInvalid", tc.name, k, err)
			}
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	tooLong := strings.Repeat("x", MaxNameLen+1)
	tooLongOwner := strings.Repeat("x", MaxOwnerLen+1)
	for _, tc := range []struct {
		name string
		v    Payload
		want error
	}{
		{"segment object", &MapReply{Pieces: []MapPiece{{Object: tooLong, Size: 1}}}, errs.ErrTooLarge},
		{"segment flags", &MapReply{Pieces: []MapPiece{{Object: "o", Flags: 8}}}, errs.ErrInvalid},
		{"zero with object", &MapReply{Pieces: []MapPiece{{Object: "o", Flags: PieceZero}}}, errs.ErrInvalid},
		{"no object", &MapReply{Pieces: []MapPiece{{Size: 1}}}, errs.ErrInvalid},
		{"segment overflow", &MapReply{Pieces: []MapPiece{{Object: "o", Offset: 1<<64 - 1, Size: 2}}}, errs.ErrInvalid},
		{"clone parent", &Clone{Parent: tooLong}, errs.ErrTooLarge},
		{"clone owner", &Clone{Owner: tooLongOwner}, errs.ErrTooLarge},
		{"snapshot name", &Snapshot{Name: tooLong}, errs.ErrTooLarge},
		{"snapshot owner", &Snapshot{Owner: tooLongOwner}, errs.ErrTooLarge},
		{"rename", &Rename{NewName: tooLong}, errs.ErrTooLarge},
		{"rename owner", &Rename{Owner: tooLongOwner}, errs.ErrTooLarge},
		{"copy", &Copy{Source: tooLong}, errs.ErrTooLarge},
		{"hash empty", &Hash{}, errs.ErrInvalid},
		{"hash short", &Hash{Hash: zeroHash[1:]}, errs.ErrInvalid},
		{"hash upper", &Hash{Hash: strings.ToUpper(zeroHash)}, errs.ErrInvalid},
		{"hash not hex", &Hash{Hash: "g" + zeroHash[1:]}, errs.ErrInvalid},
		{"volume flags", &VolumeInfo{Flags: 4}, errs.ErrInvalid},
		{"volume parent", &VolumeInfo{Parent: tooLong}, errs.ErrTooLarge},
		{"volume lock owner", &VolumeInfo{LockOwner: tooLongOwner}, errs.ErrTooLarge},
		{"lock", &Lock{Owner: tooLongOwner}, errs.ErrTooLarge},
		{"lock reply", &LockReply{Owner: tooLongOwner}, errs.ErrTooLarge},
		{"resize", &Resize{Owner: tooLongOwner}, errs.ErrTooLarge},
		{"names name", &Names{Names: []string{"", tooLong}}, errs.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := make([]byte, tc.v.EncodedSize()+8)
			if n, err := tc.v.MarshalTo(b); n != 0 || !errors.Is(err, tc.want) {
				t.Fatalf("MarshalTo = %d, %v; want %v", n, err, tc.want)
			}
			if !bytes.Equal(b, make([]byte, len(b))) {
				t.Fatal("buffer written on failure")
			}
			if b := tc.v.Marshal(); b != nil {
				t.Fatalf("Marshal = %x, want nil", b)
			}
		})
	}
}

// TestDecodeErrors feeds hand-made bodies that are well framed but break a
// rule, so that decoding is checked apart from encoding.
func TestDecodeErrors(t *testing.T) {
	hdr := func(k Kind) string { return "a7" + hex.EncodeToString([]byte{byte(k)}) + "0100" }
	str := func(n int, c byte) string {
		return hex.EncodeToString([]byte{byte(n >> 8), byte(n)}) + strings.Repeat(hex.EncodeToString([]byte{c}), n)
	}
	seg := func(objLen int, off, size, flags string) string { return str(objLen, 'o') + off + size + flags }
	const u64one, u64zero, u64max = "0000000000000001", "0000000000000000", "ffffffffffffffff"
	for _, tc := range []struct {
		name string
		k    Kind
		body string
		want []error
	}{
		{"name too long", KindCopy, str(MaxNameLen+1, 'a'), []error{errs.ErrInvalid, errs.ErrTooLarge}},
		{"name length past end", KindCopy, "0005" + "6161", []error{errs.ErrInvalid}},
		{"owner too long", KindLock, str(MaxOwnerLen+1, 'a'), []error{errs.ErrInvalid, errs.ErrTooLarge}},
		{"hash too long", KindHash, str(HashLen+1, 'a') + u64zero, []error{errs.ErrInvalid, errs.ErrTooLarge}},
		{"hash short", KindHash, str(HashLen-1, 'a') + u64zero, []error{errs.ErrInvalid}},
		{"hash upper", KindHash, str(HashLen, 'A') + u64zero, []error{errs.ErrInvalid}},
		{"bool 2", KindResize, u64one + "02" + str(0, 0), []error{errs.ErrInvalid}},
		{"bool ff", KindResize, u64one + "ff" + str(0, 0), []error{errs.ErrInvalid}},
		{"segment count huge", KindMapReply, "ffffffff" + seg(1, u64zero, u64one, "00000000"), []error{errs.ErrInvalid}},
		{"segment count one over", KindMapReply, "00000002" + seg(1, u64zero, u64one, "00000000"), []error{errs.ErrInvalid}},
		{"segment flags", KindMapReply, "00000001" + seg(1, u64zero, u64one, "00000008"), []error{errs.ErrInvalid}},
		{"segment zero with object", KindMapReply, "00000001" + seg(1, u64zero, u64one, "00000002"), []error{errs.ErrInvalid}},
		{"segment no object", KindMapReply, "00000001" + seg(0, u64zero, u64one, "00000000"), []error{errs.ErrInvalid}},
		{"segment overflow", KindMapReply, "00000001" + seg(1, u64max, u64one, "00000000"), []error{errs.ErrInvalid}},
		{"names count huge", KindNames, "ffffffff" + str(0, 0) + "00", []error{errs.ErrInvalid}},
		{"volume flags", KindVolumeInfo, u64one + "00000001" + "80000000" + u64one + str(0, 0) + str(0, 0), []error{errs.ErrInvalid}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(hdr(tc.k) + tc.body)
			if err != nil {
				t.Fatal(err)
			}
			err = New(tc.k).Unmarshal(b)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("err %v, want %v", err, w)
				}
			}
			if err != nil && errs.ToCode(err) != errs.CodeInvalid {
				t.Errorf("wire code %d, want CodeInvalid", errs.ToCode(err))
			}
		})
	}
}

// TestGolden pins the bytes of the format: if one of these changes, the
// version of that kind must change too.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		v   Payload
		hex string
	}{
		// The example in the package documentation.
		{&Clone{Parent: "snap01", Size: 4096, Owner: "h_1"},
			"a7020100 0006736e61703031 0000000000001000 0003685f31"},
		{&MapReply{Pieces: []MapPiece{{Object: "ob", Offset: 1, Size: 2, Flags: PieceReadOnly}, {Size: 3, Flags: PieceZero}}},
			"a7010100 00000002 00026f62 0000000000000001 0000000000000002 00000001 0000 0000000000000000 0000000000000003 00000002"},
		{&Snapshot{Name: "s", Owner: "o"}, "a7030100 000173 00016f"},
		{&Rename{NewName: "n", Owner: ""}, "a7040100 00016e 0000"},
		{&Copy{Source: "src"}, "a7050100 0003737263"},
		{&Hash{Hash: zeroHash, Size: 5}, "a7060100 0040" + hex.EncodeToString([]byte(zeroHash)) + " 0000000000000005"},
		{&ObjectInfo{Size: 1 << 22}, "a7070100 0000000000400000"},
		{&VolumeInfo{Size: 1, BlockSize: 2, Flags: VolSnapshot, Epoch: 3, Parent: "p", LockOwner: "l"},
			"a7080100 0000000000000001 00000002 00000002 0000000000000003 000170 00016c"},
		{&Lock{}, "a7090100 0000"},
		{&LockReply{Owner: "h"}, "a70a0100 000168"},
		{&Resize{Size: 7, Force: true, Owner: "o"}, "a70b0100 0000000000000007 01 00016f"},
		{&List{Prefix: "p", After: "a"}, "a70d0100 000170 000161"},
		{&Names{Names: []string{"x", "y"}, More: true}, "a70e0100 00000002 000178 000179 01"},
		{&Extents{Extents: []Extent{{1, 2}}}, "a70f0100 00000001 0000000000000001 0000000000000002"},
		{&ErrorText{Message: "no"}, "a7100100 00026e6f"},
		{&Session{Handle: 2, Flags: SessionWrite | SessionGone, ID: "i"}, "a7110100 0000000000000002 00000003 000169"},
		{&Doc{Body: []byte("{}")}, "a7120100 00000002 7b7d"},
	} {
		want, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := tc.v.Marshal(); !bytes.Equal(got, want) {
			t.Errorf("%v:\n got %x\nwant %x", tc.v.Kind(), got, want)
		}
	}
}

func TestKinds(t *testing.T) {
	seen := map[Kind]bool{}
	for _, tc := range samples {
		seen[tc.v.Kind()] = true
	}
	for k := Kind(0); k < 255; k++ {
		p := New(k)
		if k.Valid() != (p != nil) {
			t.Errorf("%v: Valid %v, New %v", k, k.Valid(), p)
		}
		if p != nil && p.Kind() != k {
			t.Errorf("New(%v).Kind() = %v", k, p.Kind())
		}
		if k.Valid() && !seen[k] {
			t.Errorf("no sample of %v", k)
		}
	}
	if s := KindVolumeInfo.String(); s != "VolumeInfo" {
		t.Errorf("String = %q", s)
	}
	if s := Kind(200).String(); s != "Kind(200)" {
		t.Errorf("String = %q", s)
	}
}
