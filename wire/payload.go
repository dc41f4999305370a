package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/archipelago-go/archipelago/errs"
)

// Header layout, shared by every kind and every version.
const (
	// Magic is the first byte of every payload.
	Magic byte = 0xA7
	// Version is the only layout version this package writes and reads.
	Version byte = 1
	// HeaderSize is the length of the header: magic, kind, version, reserved.
	HeaderSize = 4
)

// Length limits of strings, checked when encoding (ErrTooLarge) and when
// decoding (ErrInvalid and ErrTooLarge).
const (
	// MaxVolumeSize is the largest volume: 2^60 bytes (1 EiB).
	MaxVolumeSize = uint64(1) << 60
	// MaxNameLen bounds object and volume names.
	MaxNameLen = 255
	// MaxOwnerLen bounds lock owner identities, which embed a host name
	// (up to 253 bytes) and a port.
	MaxOwnerLen = 1024
)

// Kind says which type a payload holds. It is the second header byte; the
// numbering is part of the format and never changes, and a retired number
// is never given to another kind: 12 is retired (Create, a CREATE request
// that no peer served), and decoding it fails with ErrInvalid like an
// unknown kind.
type Kind uint8

// Kinds. The zero Kind is never valid.
const (
	KindMapReply   Kind = 1               // MapReply: answer to MAPR/MAPW
	KindClone      Kind = 2               // Clone: CLONE request
	KindSnapshot   Kind = 3               // Snapshot: SNAPSHOT request
	KindRename     Kind = 4               // Rename: RENAME request
	KindCopy       Kind = 5               // Copy: COPY request
	KindHash       Kind = 6               // Hash: HASH reply
	KindObjectInfo Kind = 7               // ObjectInfo: INFO reply of a blocker
	KindVolumeInfo Kind = 8               // VolumeInfo: INFO reply of the mapper
	KindLock       Kind = 9               // Lock: ACQUIRE/RELEASE request
	KindLockReply  Kind = 10              // LockReply: who holds a lock ACQUIRE failed on
	KindResize     Kind = 11              // Resize: TRUNCATE request to the mapper
	kindRetired12  Kind = 12              // retired: Create, a CREATE request
	KindList       Kind = 13              // List: LIST request to a blocker
	KindNames      Kind = 14              // Names: LIST reply
	KindExtents    Kind = 15              // Extents: ALLOCATED reply
	KindErrorText  Kind = 16              // ErrorText: the message of a failed reply
	KindSession    Kind = 17              // Session: OPEN/CLOSE of an endpoint's session, and OPEN's reply
	KindDoc        Kind = 18              // Doc: a JSON document (requests and replies of the lifecycle ops)
	kindMax             = KindDoc + 1 // one past the last kind
)

var kindNames = [...]string{
	KindMapReply: "MapReply", KindClone: "Clone", KindSnapshot: "Snapshot",
	KindRename: "Rename", KindCopy: "Copy", KindHash: "Hash",
	KindObjectInfo: "ObjectInfo", KindVolumeInfo: "VolumeInfo",
	KindLock: "Lock", KindLockReply: "LockReply", KindResize: "Resize",
	KindList: "List", KindNames: "Names", KindExtents: "Extents", KindErrorText: "ErrorText",
	KindSession: "Session", KindDoc: "Doc",
}

// Valid reports whether k is a kind this package knows (not 0, not
// retired, not beyond the last).
func (k Kind) Valid() bool { return k < kindMax && kindNames[k] != "" }

func (k Kind) String() string {
	if k.Valid() {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Payload is implemented by every payload type of this package (and only by
// them: the interface has unexported methods).
type Payload interface {
	// Kind is the kind written in the header.
	Kind() Kind
	// EncodedSize is the encoded length, header included. (It is not
	// called Size because most payloads have a Size field.)
	EncodedSize() int
	// MarshalTo encodes into b[:EncodedSize()] and returns that length.
	// It fails with ErrNoSpace if b is too short, ErrTooLarge if a string
	// or list is beyond its limit and ErrInvalid if a field is malformed;
	// b is then left untouched. Bytes of b past EncodedSize() are never
	// written: clear them if b is decoded whole (see Padding).
	MarshalTo(b []byte) (int, error)
	// Marshal returns the encoding in a new slice, or nil if the value
	// cannot be encoded (MarshalTo tells why).
	Marshal() []byte
	// Unmarshal decodes b (see the package documentation for what is
	// accepted). On error the receiver is left unchanged. The result never
	// aliases b.
	Unmarshal(b []byte) error

	validate() error
	bodySize() int
	encode(e *encoder)
	decode(d *decoder)
}

// PeekKind checks the header of b and returns its kind: ErrInvalid for a
// short buffer, a bad magic, a non-zero reserved byte or an unknown kind,
// ErrVersion for a version other than Version. On error the kind is 0.
func PeekKind(b []byte) (Kind, error) {
	if len(b) < HeaderSize {
		return 0, fmt.Errorf("payload: header needs %d bytes, have %d: %w", HeaderSize, len(b), errs.ErrInvalid)
	}
	if b[0] != Magic {
		return 0, fmt.Errorf("payload: bad magic %#02x: %w", b[0], errs.ErrInvalid)
	}
	k := Kind(b[1])
	if b[2] != Version {
		return 0, fmt.Errorf("payload: %v version %d (this build reads %d): %w", k, b[2], Version, errs.ErrVersion)
	}
	if b[3] != 0 {
		return 0, fmt.Errorf("payload: reserved header byte is %#02x: %w", b[3], errs.ErrInvalid)
	}
	if k == kindRetired12 {
		return 0, fmt.Errorf("payload: kind %d is retired (it was Create, a CREATE request no peer served): %w", uint8(k), errs.ErrInvalid)
	}
	if !k.Valid() {
		return 0, fmt.Errorf("payload: unknown kind %d: %w", uint8(k), errs.ErrInvalid)
	}
	return k, nil
}

// New returns a zero value of the type of kind k, or nil for an unknown kind.
func New(k Kind) Payload {
	switch k {
	case KindMapReply:
		return new(MapReply)
	case KindClone:
		return new(Clone)
	case KindSnapshot:
		return new(Snapshot)
	case KindRename:
		return new(Rename)
	case KindCopy:
		return new(Copy)
	case KindHash:
		return new(Hash)
	case KindObjectInfo:
		return new(ObjectInfo)
	case KindVolumeInfo:
		return new(VolumeInfo)
	case KindLock:
		return new(Lock)
	case KindLockReply:
		return new(LockReply)
	case KindResize:
		return new(Resize)
	case KindList:
		return new(List)
	case KindNames:
		return new(Names)
	case KindExtents:
		return new(Extents)
	case KindErrorText:
		return new(ErrorText)
	case KindSession:
		return new(Session)
	case KindDoc:
		return new(Doc)
	}
	return nil
}

// Decode decodes a payload of any kind, for tools that do not know in
// advance what b holds (tracing, dumps). Peers that expect one kind should
// call that type's Unmarshal, which also rejects any other kind.
func Decode(b []byte) (Payload, error) {
	k, err := PeekKind(b)
	if err != nil {
		return nil, err
	}
	p := New(k)
	if err := p.Unmarshal(b); err != nil {
		return nil, err
	}
	return p, nil
}

func size(p Payload) int { return HeaderSize + p.bodySize() }

func marshalTo(p Payload, b []byte) (int, error) {
	if err := p.validate(); err != nil {
		return 0, fmt.Errorf("payload %v: %w", p.Kind(), err)
	}
	n := size(p)
	if len(b) < n {
		return 0, fmt.Errorf("payload %v: needs %d bytes, buffer has %d: %w", p.Kind(), n, len(b), errs.ErrNoSpace)
	}
	e := encoder{b: b[:n]}
	e.u8(Magic)
	e.u8(uint8(p.Kind()))
	e.u8(Version)
	e.u8(0)
	p.encode(&e)
	if e.off != n {
		// Size and encode disagree: a bug in this package, not bad input.
		panic(fmt.Sprintf("payload %v: encoded %d bytes, Size said %d", p.Kind(), e.off, n))
	}
	return n, nil
}

func marshal(p Payload) []byte {
	b := make([]byte, size(p))
	if _, err := marshalTo(p, b); err != nil {
		return nil
	}
	return b
}

// unmarshal decodes b into p, which must be a fresh value.
func unmarshal(p Payload, b []byte) error {
	k, err := PeekKind(b)
	if err != nil {
		return err
	}
	if k != p.Kind() {
		return fmt.Errorf("payload: got kind %v, want %v: %w", k, p.Kind(), errs.ErrInvalid)
	}
	d := decoder{b: b, off: HeaderSize}
	p.decode(&d)
	if d.err != nil {
		return fmt.Errorf("payload %v: %w", k, d.err)
	}
	for i := d.off; i < len(b); i++ {
		if b[i] != 0 {
			return fmt.Errorf("payload %v: non-zero byte after the end (offset %d, payload ends at %d): %w", k, i, d.off, errs.ErrInvalid)
		}
	}
	if err := p.validate(); err != nil {
		if !errors.Is(err, errs.ErrInvalid) {
			err = fmt.Errorf("%w: %w", errs.ErrInvalid, err)
		}
		return fmt.Errorf("payload %v: %w", k, err)
	}
	return nil
}

// checkString is the encoding-side check of a string field.
func checkString(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes, limit %d: %w", field, len(s), max, errs.ErrTooLarge)
	}
	return nil
}

// checkCount is the encoding-side check of a list length.
func checkCount(field string, n int) error {
	if uint64(n) > math.MaxUint32 {
		return fmt.Errorf("%s has %d entries, limit %d: %w", field, n, uint64(math.MaxUint32), errs.ErrTooLarge)
	}
	return nil
}

func strSize(s string) int { return 2 + len(s) }

// encoder writes into a buffer already known to be large enough.
type encoder struct {
	b   []byte
	off int
}

func (e *encoder) u8(x uint8) {
	e.b[e.off] = x
	e.off++
}

func (e *encoder) u16(x uint16) {
	binary.BigEndian.PutUint16(e.b[e.off:], x)
	e.off += 2
}

func (e *encoder) u32(x uint32) {
	binary.BigEndian.PutUint32(e.b[e.off:], x)
	e.off += 4
}

func (e *encoder) u64(x uint64) {
	binary.BigEndian.PutUint64(e.b[e.off:], x)
	e.off += 8
}

func (e *encoder) bool(x bool) {
	if x {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// str writes a string already checked against its limit.
func (e *encoder) str(s string) {
	e.u16(uint16(len(s)))
	e.off += copy(e.b[e.off:], s)
}

// decoder reads fields in order. The first failure sticks: later reads
// return zero values, so decode methods need not check after every field.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n > len(d.b)-d.off {
		d.err = fmt.Errorf("truncated: needs %d bytes at offset %d, buffer has %d: %w", n, d.off, len(d.b), errs.ErrInvalid)
		return false
	}
	return true
}

func (d *decoder) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	x := d.b[d.off]
	d.off++
	return x
}

func (d *decoder) u16() uint16 {
	if !d.need(2) {
		return 0
	}
	x := binary.BigEndian.Uint16(d.b[d.off:])
	d.off += 2
	return x
}

func (d *decoder) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	x := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += 4
	return x
}

func (d *decoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	x := binary.BigEndian.Uint64(d.b[d.off:])
	d.off += 8
	return x
}

// bool accepts only 0 and 1, so that every value has one encoding.
func (d *decoder) bool(field string) bool {
	at := d.off
	x := d.u8()
	if x > 1 && d.err == nil {
		d.err = fmt.Errorf("%s: boolean byte %d at offset %d: %w", field, x, at, errs.ErrInvalid)
	}
	return x == 1
}

// str reads a string of at most max bytes. The result is a copy.
func (d *decoder) str(field string, max int) string {
	at := d.off
	n := int(d.u16())
	if d.err != nil {
		return ""
	}
	if n > max {
		d.err = fmt.Errorf("%s: length %d at offset %d, limit %d: %w: %w", field, n, at, max, errs.ErrInvalid, errs.ErrTooLarge)
		return ""
	}
	if !d.need(n) {
		return ""
	}
	s := string(d.b[d.off : d.off+n])
	d.off += n
	return s
}

// count reads a list length and checks that the rest of the buffer can
// hold that many entries of at least minEntry bytes, before anything is
// allocated for them.
func (d *decoder) count(field string, minEntry int) int {
	at := d.off
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if uint64(n)*uint64(minEntry) > uint64(len(d.b)-d.off) {
		d.err = fmt.Errorf("%s: count %d at offset %d needs at least %d bytes, %d left: %w",
			field, n, at, uint64(n)*uint64(minEntry), len(d.b)-d.off, errs.ErrInvalid)
		return 0
	}
	return int(n)
}
