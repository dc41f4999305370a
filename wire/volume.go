package wire

import (
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
)

// Clone asks the mapper to create a volume (the request's target) from a
// read-only parent, or a blank volume.
type Clone struct {
	// Parent is the snapshot to clone; empty for a blank volume.
	Parent string
	// Size of the new volume in bytes; 0 means the parent's size.
	Size uint64
	// Owner is the lock owner identity the mapper acts for.
	Owner string
}

func (v *Clone) Kind() Kind                      { return KindClone }
func (v *Clone) EncodedSize() int                { return size(v) }
func (v *Clone) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Clone) Marshal() []byte                 { return marshal(v) }

func (v *Clone) Unmarshal(b []byte) error {
	var t Clone
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Clone) validate() error {
	if err := checkString("parent", v.Parent, MaxNameLen); err != nil {
		return err
	}
	return checkString("owner", v.Owner, MaxOwnerLen)
}

func (v *Clone) bodySize() int { return strSize(v.Parent) + 8 + strSize(v.Owner) }

func (v *Clone) encode(e *encoder) {
	e.str(v.Parent)
	e.u64(v.Size)
	e.str(v.Owner)
}

func (v *Clone) decode(d *decoder) {
	v.Parent = d.str("parent", MaxNameLen)
	v.Size = d.u64()
	v.Owner = d.str("owner", MaxOwnerLen)
}

// Snapshot asks the mapper to snapshot the request's target.
type Snapshot struct {
	// Name of the snapshot to create.
	Name string
	// Owner is the lock owner identity the mapper acts for.
	Owner string
}

func (v *Snapshot) Kind() Kind                      { return KindSnapshot }
func (v *Snapshot) EncodedSize() int                { return size(v) }
func (v *Snapshot) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Snapshot) Marshal() []byte                 { return marshal(v) }

func (v *Snapshot) Unmarshal(b []byte) error {
	var t Snapshot
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Snapshot) validate() error {
	if err := checkString("name", v.Name, MaxNameLen); err != nil {
		return err
	}
	return checkString("owner", v.Owner, MaxOwnerLen)
}

func (v *Snapshot) bodySize() int { return strSize(v.Name) + strSize(v.Owner) }

func (v *Snapshot) encode(e *encoder) {
	e.str(v.Name)
	e.str(v.Owner)
}

func (v *Snapshot) decode(d *decoder) {
	v.Name = d.str("name", MaxNameLen)
	v.Owner = d.str("owner", MaxOwnerLen)
}

// Rename asks the mapper to rename the request's target.
type Rename struct {
	// NewName is the volume's name afterwards.
	NewName string
	// Owner is the lock owner identity the mapper acts for.
	Owner string
}

func (v *Rename) Kind() Kind                      { return KindRename }
func (v *Rename) EncodedSize() int                { return size(v) }
func (v *Rename) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Rename) Marshal() []byte                 { return marshal(v) }

func (v *Rename) Unmarshal(b []byte) error {
	var t Rename
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Rename) validate() error {
	if err := checkString("new name", v.NewName, MaxNameLen); err != nil {
		return err
	}
	return checkString("owner", v.Owner, MaxOwnerLen)
}

func (v *Rename) bodySize() int { return strSize(v.NewName) + strSize(v.Owner) }

func (v *Rename) encode(e *encoder) {
	e.str(v.NewName)
	e.str(v.Owner)
}

func (v *Rename) decode(d *decoder) {
	v.NewName = d.str("new name", MaxNameLen)
	v.Owner = d.str("owner", MaxOwnerLen)
}

// Resize (op TRUNCATE to the mapper) changes the size of the request's
// target.
type Resize struct {
	// Size is the new size in bytes.
	Size uint64
	// Force allows shrinking.
	Force bool
	// Owner is the lock owner identity the mapper acts for.
	Owner string
}

func (v *Resize) Kind() Kind                      { return KindResize }
func (v *Resize) EncodedSize() int                { return size(v) }
func (v *Resize) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *Resize) Marshal() []byte                 { return marshal(v) }

func (v *Resize) Unmarshal(b []byte) error {
	var t Resize
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *Resize) validate() error { return checkString("owner", v.Owner, MaxOwnerLen) }

func (v *Resize) bodySize() int { return 8 + 1 + strSize(v.Owner) }

func (v *Resize) encode(e *encoder) {
	e.u64(v.Size)
	e.bool(v.Force)
	e.str(v.Owner)
}

func (v *Resize) decode(d *decoder) {
	v.Size = d.u64()
	v.Force = d.bool("force")
	v.Owner = d.str("owner", MaxOwnerLen)
}

// Flags of a VolumeInfo. Other bits are rejected.
const (
	// VolReadOnly: the volume cannot be written.
	VolReadOnly uint32 = 1 << 0
	// VolSnapshot: the volume is a snapshot.
	VolSnapshot uint32 = 1 << 1

	volKnown = VolReadOnly | VolSnapshot
)

// VolumeInfo is the mapper's answer to INFO.
type VolumeInfo struct {
	// Size of the volume in bytes.
	Size uint64
	// BlockSize is the size of the volume's objects.
	BlockSize uint32
	// Flags is a combination of VolReadOnly and VolSnapshot.
	Flags uint32
	// Epoch is the volume's current epoch.
	Epoch uint64
	// Parent is the snapshot the volume was cloned from, if any.
	Parent string
	// LockOwner is the identity holding the volume's lock, if any.
	LockOwner string
}

func (v *VolumeInfo) Kind() Kind                      { return KindVolumeInfo }
func (v *VolumeInfo) EncodedSize() int                { return size(v) }
func (v *VolumeInfo) MarshalTo(b []byte) (int, error) { return marshalTo(v, b) }
func (v *VolumeInfo) Marshal() []byte                 { return marshal(v) }

func (v *VolumeInfo) Unmarshal(b []byte) error {
	var t VolumeInfo
	if err := unmarshal(&t, b); err != nil {
		return err
	}
	*v = t
	return nil
}

func (v *VolumeInfo) validate() error {
	if v.Flags&^volKnown != 0 {
		return fmt.Errorf("unknown volume flags %#x: %w", v.Flags&^volKnown, errs.ErrInvalid)
	}
	if err := checkString("parent", v.Parent, MaxNameLen); err != nil {
		return err
	}
	return checkString("lock owner", v.LockOwner, MaxOwnerLen)
}

func (v *VolumeInfo) bodySize() int {
	return 8 + 4 + 4 + 8 + strSize(v.Parent) + strSize(v.LockOwner)
}

func (v *VolumeInfo) encode(e *encoder) {
	e.u64(v.Size)
	e.u32(v.BlockSize)
	e.u32(v.Flags)
	e.u64(v.Epoch)
	e.str(v.Parent)
	e.str(v.LockOwner)
}

func (v *VolumeInfo) decode(d *decoder) {
	v.Size = d.u64()
	v.BlockSize = d.u32()
	v.Flags = d.u32()
	v.Epoch = d.u64()
	v.Parent = d.str("parent", MaxNameLen)
	v.LockOwner = d.str("lock owner", MaxOwnerLen)
}
