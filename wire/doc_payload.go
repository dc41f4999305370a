package wire

import (
	"encoding/json"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// MaxDocLen is the largest Doc body: 64 MiB.
const MaxDocLen = 64 << 20

// Doc carries a JSON document: the request and the reply of the data
// lifecycle ops (CHECK, GC, USAGE, DIFF, FLATTEN, ROLLBACK, TREE), whose
// shapes are the Go types of package volclient and change more often than
// the segment format. Body is the JSON text; NewDoc and Decode convert.
type Doc struct {
	Body []byte
}

// NewDoc encodes v as JSON into a Doc.
func NewDoc(v any) (*Doc, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("payload Doc: %w: %w", errs.ErrInvalid, err)
	}
	return &Doc{Body: b}, nil
}

// Decode decodes the body into v (an empty body leaves v as it is).
func (v *Doc) Decode(into any) error {
	if len(v.Body) == 0 {
		return nil
	}
	if err := json.Unmarshal(v.Body, into); err != nil {
		return fmt.Errorf("payload Doc: %w: %w", errs.ErrInvalid, err)
	}
	return nil
}

func (v *Doc) Kind() Kind                      { return KindDoc }
func (v *Doc) EncodedSize() int                { return size(v) }
func (v *Doc) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Doc) Marshal() []byte                 { return marshal(v) }

func (v *Doc) Unmarshal(b []byte) error {
	var t Doc
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Doc) validate() error {
	if len(v.Body) > MaxDocLen {
		return fmt.Errorf("document is %d bytes, limit %d: %w", len(v.Body), MaxDocLen, errs.ErrTooLarge)
	}
	return nil
}

func (v *Doc) bodySize() int { return 4 + len(v.Body) }

func (v *Doc) encode(e *encoder) {
	e.u32(uint32(len(v.Body)))
	e.off += copy(e.b[e.off:], v.Body)
}

func (v *Doc) decode(d *decoder) {
	at := d.off
	n := d.u32()
	if d.err != nil {
		return
	}
	if n > MaxDocLen {
		d.err = fmt.Errorf("document: length %d at offset %d, limit %d: %w: %w", n, at, MaxDocLen, errs.ErrInvalid, errs.ErrTooLarge)
		return
	}
	if !d.need(int(n)) {
		return
	}
	if n > 0 {
		v.Body = append([]byte(nil), d.b[d.off:d.off+int(n)]...)
	}
	d.off += int(n)
}
