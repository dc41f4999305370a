package wire

import (
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// Flags of a Session. Other bits are rejected.
const (
	// SessionWrite: the connection may write.
	SessionWrite uint32 = 1 << 0
	// SessionGone (CLOSE): the connection's client left while requests
	// are still running; a plain CLOSE follows when they are done.
	SessionGone uint32 = 1 << 1

	sessionKnown = SessionWrite | SessionGone
)

// Session is a block endpoint's connection to a volume (the request's
// target), announced to the mapper with OPEN and ended with CLOSE; the
// mapper keys it by the request's source port, that port's process and
// Handle. OPEN's reply is a Session with ID set: the volume's incarnation,
// which the connection's I/O names the volume with (NAME/ID).
type Session struct {
	// Handle is the endpoint's number for the connection, unique within
	// its process.
	Handle uint64
	// Flags is a combination of SessionWrite and SessionGone.
	Flags uint32
	// ID is the incarnation (32 hex digits) in OPEN's reply; empty in
	// requests.
	ID string
}

func (v *Session) Kind() Kind                      { return KindSession }
func (v *Session) EncodedSize() int                { return size(v) }
func (v *Session) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Session) Marshal() []byte                 { return marshal(v) }

func (v *Session) Unmarshal(b []byte) error {
	var t Session
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Session) validate() error {
	if v.Flags&^sessionKnown != 0 {
		return fmt.Errorf("unknown session flags %#x: %w", v.Flags&^sessionKnown, errs.ErrInvalid)
	}
	return checkString("id", v.ID, MaxNameLen)
}

func (v *Session) bodySize() int { return 8 + 4 + strSize(v.ID) }

func (v *Session) encode(e *encoder) {
	e.u64(v.Handle)
	e.u32(v.Flags)
	e.str(v.ID)
}

func (v *Session) decode(d *decoder) {
	v.Handle = d.u64()
	v.Flags = d.u32()
	v.ID = d.str("id", MaxNameLen)
}
