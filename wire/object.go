package wire

import (
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// Copy asks a blocker to copy Source to the request's target.
type Copy struct {
	// Source is the object to copy from.
	Source string
}

func (v *Copy) Kind() Kind                      { return KindCopy }
func (v *Copy) EncodedSize() int                { return size(v) }
func (v *Copy) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Copy) Marshal() []byte                 { return marshal(v) }

func (v *Copy) Unmarshal(b []byte) error {
	var t Copy
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Copy) validate() error   { return checkString("source", v.Source, MaxNameLen) }
func (v *Copy) bodySize() int     { return strSize(v.Source) }
func (v *Copy) encode(e *encoder) { e.str(v.Source) }
func (v *Copy) decode(d *decoder) { v.Source = d.str("source", MaxNameLen) }

// HashLen is the length of Hash.Hash: SHA-256 in lowercase hex.
const HashLen = 64

// Hash is a blocker's answer to HASH.
type Hash struct {
	// Hash is the SHA-256 of the content, HashLen lowercase hex digits.
	Hash string
	// Size is the content length after stripping trailing zeros.
	Size uint64
}

func (v *Hash) Kind() Kind                      { return KindHash }
func (v *Hash) EncodedSize() int                { return size(v) }
func (v *Hash) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Hash) Marshal() []byte                 { return marshal(v) }

func (v *Hash) Unmarshal(b []byte) error {
	var t Hash
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Hash) validate() error {
	if len(v.Hash) != HashLen {
		return fmt.Errorf("hash is %d characters, want %d: %w", len(v.Hash), HashLen, errs.ErrInvalid)
	}
	for i := 0; i < len(v.Hash); i++ {
		if c := v.Hash[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("hash has %q at %d, want lowercase hex: %w", c, i, errs.ErrInvalid)
		}
	}
	return nil
}

func (v *Hash) bodySize() int { return strSize(v.Hash) + 8 }

func (v *Hash) encode(e *encoder) {
	e.str(v.Hash)
	e.u64(v.Size)
}

func (v *Hash) decode(d *decoder) {
	v.Hash = d.str("hash", HashLen)
	v.Size = d.u64()
}

// ObjectInfo is a blocker's answer to INFO.
type ObjectInfo struct {
	// Size of the object in bytes.
	Size uint64
}

func (v *ObjectInfo) Kind() Kind                      { return KindObjectInfo }
func (v *ObjectInfo) EncodedSize() int                { return size(v) }
func (v *ObjectInfo) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *ObjectInfo) Marshal() []byte                 { return marshal(v) }

func (v *ObjectInfo) Unmarshal(b []byte) error {
	var t ObjectInfo
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *ObjectInfo) validate() error   { return nil }
func (v *ObjectInfo) bodySize() int     { return 8 }
func (v *ObjectInfo) encode(e *encoder) { e.u64(v.Size) }
func (v *ObjectInfo) decode(d *decoder) { v.Size = d.u64() }

// Lock goes with ACQUIRE and RELEASE to a blocker; the lock is the
// request's target.
type Lock struct {
	// Owner to acquire or release as; empty means the blocker's own
	// identity.
	Owner string
}

func (v *Lock) Kind() Kind                      { return KindLock }
func (v *Lock) EncodedSize() int                { return size(v) }
func (v *Lock) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Lock) Marshal() []byte                 { return marshal(v) }

func (v *Lock) Unmarshal(b []byte) error {
	var t Lock
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Lock) validate() error   { return checkString("owner", v.Owner, MaxOwnerLen) }
func (v *Lock) bodySize() int     { return strSize(v.Owner) }
func (v *Lock) encode(e *encoder) { e.str(v.Owner) }
func (v *Lock) decode(d *decoder) { v.Owner = d.str("owner", MaxOwnerLen) }

// LockReply says who holds a lock, in the answer to an ACQUIRE that failed
// because another owner holds it.
type LockReply struct {
	// Owner is the identity holding the lock.
	Owner string
}

func (v *LockReply) Kind() Kind                      { return KindLockReply }
func (v *LockReply) EncodedSize() int                { return size(v) }
func (v *LockReply) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *LockReply) Marshal() []byte                 { return marshal(v) }

func (v *LockReply) Unmarshal(b []byte) error {
	var t LockReply
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *LockReply) validate() error   { return checkString("owner", v.Owner, MaxOwnerLen) }
func (v *LockReply) bodySize() int     { return strSize(v.Owner) }
func (v *LockReply) encode(e *encoder) { e.str(v.Owner) }
func (v *LockReply) decode(d *decoder) { v.Owner = d.str("owner", MaxOwnerLen) }

// Compile-time checks that every type is a Payload.
var (
	_ Payload = (*MapReply)(nil)
	_ Payload = (*Clone)(nil)
	_ Payload = (*Snapshot)(nil)
	_ Payload = (*Rename)(nil)
	_ Payload = (*Copy)(nil)
	_ Payload = (*Hash)(nil)
	_ Payload = (*ObjectInfo)(nil)
	_ Payload = (*VolumeInfo)(nil)
	_ Payload = (*Lock)(nil)
	_ Payload = (*LockReply)(nil)
	_ Payload = (*Resize)(nil)
	_ Payload = (*List)(nil)
	_ Payload = (*Names)(nil)
	_ Payload = (*Extents)(nil)
	_ Payload = (*ErrorText)(nil)
	_ Payload = (*Session)(nil)
)
