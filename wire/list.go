package wire

import (
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// List asks a blocker for the names of objects starting with Prefix, in
// byte order, after After ("" from the start). The answer is Names.
type List struct {
	Prefix string
	After  string
}

func (v *List) Kind() Kind                      { return KindList }
func (v *List) EncodedSize() int                { return size(v) }
func (v *List) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *List) Marshal() []byte                 { return marshal(v) }

func (v *List) Unmarshal(b []byte) error {
	var t List
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *List) validate() error {
	if err := checkString("prefix", v.Prefix, MaxNameLen); err != nil {
		return err
	}
	return checkString("after", v.After, MaxNameLen)
}

func (v *List) bodySize() int { return strSize(v.Prefix) + strSize(v.After) }

func (v *List) encode(e *encoder) {
	e.str(v.Prefix)
	e.str(v.After)
}

func (v *List) decode(d *decoder) {
	v.Prefix = d.str("prefix", MaxNameLen)
	v.After = d.str("after", MaxNameLen)
}

// Names answers List: a page of names in byte order; More says whether
// names follow the last one (ask again with After set to it).
type Names struct {
	Names []string
	More  bool
}

func (v *Names) Kind() Kind                      { return KindNames }
func (v *Names) EncodedSize() int                { return size(v) }
func (v *Names) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Names) Marshal() []byte                 { return marshal(v) }

func (v *Names) Unmarshal(b []byte) error {
	var t Names
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Names) validate() error {
	if err := checkCount("names", len(v.Names)); err != nil {
		return err
	}
	for i, n := range v.Names {
		if err := checkString(fmt.Sprintf("name %d", i), n, MaxNameLen); err != nil {
			return err
		}
	}
	return nil
}

func (v *Names) bodySize() int {
	n := 4 + 1
	for _, s := range v.Names {
		n += strSize(s)
	}
	return n
}

func (v *Names) encode(e *encoder) {
	e.u32(uint32(len(v.Names)))
	for _, s := range v.Names {
		e.str(s)
	}
	e.bool(v.More)
}

func (v *Names) decode(d *decoder) {
	n := d.count("names", 2)
	if n > 0 {
		v.Names = make([]string, n)
		for i := range v.Names {
			v.Names[i] = d.str("name", MaxNameLen)
		}
	}
	v.More = d.bool("more")
}

// Extents answers ALLOCATED: the allocated (non-zero-block) ranges of the
// requested volume range, in order.
type Extents struct {
	Extents []Extent
}

// Extent is a byte range of a volume.
type Extent struct {
	Offset, Size uint64
}

func (v *Extents) Kind() Kind                      { return KindExtents }
func (v *Extents) EncodedSize() int                { return size(v) }
func (v *Extents) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Extents) Marshal() []byte                 { return marshal(v) }

func (v *Extents) Unmarshal(b []byte) error {
	var t Extents
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Extents) validate() error {
	if err := checkCount("extents", len(v.Extents)); err != nil {
		return err
	}
	for i, e := range v.Extents {
		if e.Offset+e.Size < e.Offset {
			return fmt.Errorf("extent %d: offset %d + size %d overflows: %w", i, e.Offset, e.Size, errs.ErrInvalid)
		}
	}
	return nil
}

func (v *Extents) bodySize() int { return 4 + 16*len(v.Extents) }

func (v *Extents) encode(e *encoder) {
	e.u32(uint32(len(v.Extents)))
	for _, x := range v.Extents {
		e.u64(x.Offset)
		e.u64(x.Size)
	}
}

func (v *Extents) decode(d *decoder) {
	n := d.count("extents", 16)
	if n > 0 {
		v.Extents = make([]Extent, n)
		for i := range v.Extents {
			v.Extents[i].Offset = d.u64()
			v.Extents[i].Size = d.u64()
		}
	}
}

// MaxErrorLen is the longest ErrorText message.
const MaxErrorLen = 1024

// ErrorText goes with a failed reply (of any op but READ and WRITE, whose
// buffer is the caller's data): the server's error message, so that a tool
// can show the cause and not just the error code.
type ErrorText struct {
	Message string
}

func (v *ErrorText) Kind() Kind                      { return KindErrorText }
func (v *ErrorText) EncodedSize() int                { return size(v) }
func (v *ErrorText) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *ErrorText) Marshal() []byte                 { return marshal(v) }

func (v *ErrorText) Unmarshal(b []byte) error {
	var t ErrorText
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *ErrorText) validate() error   { return checkString("message", v.Message, MaxErrorLen) }
func (v *ErrorText) bodySize() int     { return strSize(v.Message) }
func (v *ErrorText) encode(e *encoder) { e.str(v.Message) }
func (v *ErrorText) decode(d *decoder) { v.Message = d.str("message", MaxErrorLen) }
