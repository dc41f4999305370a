package wire

import (
	"fmt"
	"math"

	"github.com/archipelago-go/archipelago/errs"
)

// Flags of a MapPiece. Other bits are rejected.
const (
	// PieceReadOnly: the object is shared (with a snapshot or a parent) and
	// must not be written in place.
	PieceReadOnly uint32 = 1 << 0
	// PieceZero: the range is the zero block: no object, reads as zeros.
	PieceZero uint32 = 1 << 1
	// PieceCacheable: the mapper holds the volume's lock, so the mapping
	// stays as it is until an operation on the volume (snapshot, trim,
	// resize, rename, remove, close, unlock) passes through vlmcd, which
	// may keep it until then.
	PieceCacheable uint32 = 1 << 2

	pieceKnown = PieceReadOnly | PieceZero | PieceCacheable
)

// MapPiece is one contiguous piece of a mapped volume range.
type MapPiece struct {
	// Object holds the data; empty if and only if Flags has PieceZero.
	Object string
	// Offset is where the piece starts within Object.
	Offset uint64
	// Size is the length of the piece in bytes. Offset+Size must not
	// overflow.
	Size uint64
	// Flags is a combination of PieceReadOnly and PieceZero.
	Flags uint32
}

// minPieceSize is the encoding of a piece with an empty object name.
const minPieceSize = 2 + 8 + 8 + 4

func (s *MapPiece) validate(i int) error {
	if err := checkString(fmt.Sprintf("piece %d object", i), s.Object, MaxNameLen); err != nil {
		return err
	}
	if s.Flags&^pieceKnown != 0 {
		return fmt.Errorf("piece %d: unknown flags %#x: %w", i, s.Flags&^pieceKnown, errs.ErrInvalid)
	}
	zero := s.Flags&PieceZero != 0
	if zero && s.Object != "" {
		return fmt.Errorf("piece %d: zero block names object %q: %w", i, s.Object, errs.ErrInvalid)
	}
	if !zero && s.Object == "" {
		return fmt.Errorf("piece %d: no object and not a zero block: %w", i, errs.ErrInvalid)
	}
	if s.Offset > math.MaxUint64-s.Size {
		return fmt.Errorf("piece %d: offset %d + size %d overflows: %w", i, s.Offset, s.Size, errs.ErrInvalid)
	}
	return nil
}

// MapReply answers MAPR and MAPW: the objects that cover the requested
// volume range, in order.
type MapReply struct {
	Pieces []MapPiece
}

func (v *MapReply) Kind() Kind                      { return KindMapReply }
func (v *MapReply) EncodedSize() int                { return size(v) }
func (v *MapReply) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *MapReply) Marshal() []byte                 { return marshal(v) }

func (v *MapReply) Unmarshal(b []byte) error {
	var t MapReply
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *MapReply) validate() error {
	if err := checkCount("pieces", len(v.Pieces)); err != nil {
		return err
	}
	for i := range v.Pieces {
		if err := v.Pieces[i].validate(i); err != nil {
			return err
		}
	}
	return nil
}

func (v *MapReply) bodySize() int {
	n := 4
	for i := range v.Pieces {
		n += minPieceSize + len(v.Pieces[i].Object)
	}
	return n
}

func (v *MapReply) encode(e *encoder) {
	e.u32(uint32(len(v.Pieces)))
	for i := range v.Pieces {
		s := &v.Pieces[i]
		e.str(s.Object)
		e.u64(s.Offset)
		e.u64(s.Size)
		e.u32(s.Flags)
	}
}

func (v *MapReply) decode(d *decoder) {
	n := d.count("pieces", minPieceSize)
	if n == 0 {
		return
	}
	v.Pieces = make([]MapPiece, n)
	for i := range v.Pieces {
		s := &v.Pieces[i]
		s.Object = d.str("piece object", MaxNameLen)
		s.Offset = d.u64()
		s.Size = d.u64()
		s.Flags = d.u32()
	}
}
