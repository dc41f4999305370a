package volclient

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// MaxSize is the largest volume: 2^60 bytes (1 EiB).
const MaxSize = wire.MaxVolumeSize

// Info describes a volume or snapshot. Its JSON form is what `vlmc info
// --json` and `vlmc list --json` print (Snapshot is left out: ReadOnly
// says it there).
type Info struct {
	Name string `json:"name"`
	// Size in bytes.
	Size uint64 `json:"size"`
	// ReadOnly: a snapshot (or a volume that cannot be written).
	ReadOnly bool `json:"readonly"`
	// Snapshot: the volume is a snapshot.
	Snapshot bool `json:"-"`
	// Parent is the snapshot the volume was cloned from, "" if none.
	Parent string `json:"parent"`
	// LockOwner is the host (HOST_ID) that holds the volume's lock, ""
	// if it is free.
	LockOwner string `json:"lock_owner"`
	// BlockSize is the unit of copy-on-write, in bytes.
	BlockSize uint32 `json:"block_size"`
	// Epoch numbers the incarnations of the volume's data objects: a
	// snapshot, a clone or a broken lock moves it on.
	Epoch uint64 `json:"epoch"`
	// Children: a volume's snapshots, a snapshot's clones (Client.Children,
	// from the TREE op; Info leaves it nil, `vlmc info` fills it).
	Children []string `json:"children,omitempty"`
}

// Vlmcd returns where the vlmcd of the installation that cfg describes
// serves: the segment's name and the port of its (first) vlmcd role. It
// fails with errs.ErrNotFound if cfg has no vlmcd role.
func Vlmcd(cfg *config.Config) (segment string, port int, err error) {
	rs := cfg.RolesOfType(config.TypeVlmcd)
	if len(rs) == 0 {
		return "", 0, fmt.Errorf("%s has no vlmcd role: %w", cfg.Path, errs.ErrNotFound)
	}
	return cfg.XSEG.Name, rs[0].PortStart, nil
}

// DialConfig is Dial to the vlmcd of the installation that cfg describes
// (see Vlmcd): what a program that reads the configuration file (see
// config.Load) calls to manage its volumes.
func DialConfig(cfg *config.Config) (*Client, error) {
	seg, port, err := Vlmcd(cfg)
	if err != nil {
		return nil, err
	}
	return Dial(seg, port)
}

// mgmtBuf is the buffer of a management request: room for its payload
// and for the server's error message.
const mgmtBuf = 1024

// manage sends one management request about volume name.
func (c *Client) manage(ctx context.Context, op xseg.Op, name string, fl xseg.Flags, p wire.Payload) error {
	return c.Do(ctx, Call{Op: op, Target: name, Flags: fl, Payload: p, BufLen: mgmtBuf})
}

// checkSize refuses a size of 0 or beyond MaxSize before it reaches the
// mapper, naming the volume.
func checkSize(name string, size uint64) error {
	if size > MaxSize {
		return fmt.Errorf("volume %q: size %d beyond the limit of %d bytes: %w", name, size, MaxSize, errs.ErrTooLarge)
	}
	return nil
}

// Create makes a blank, thin volume of size bytes: 1 to MaxSize (block
// devices and NBD clients address 512-byte sectors: give them a multiple
// of 512; Create does not require it).
// It fails with errs.ErrExists if the name is taken.
func (c *Client) Create(ctx context.Context, name string, size uint64) error {
	if size == 0 {
		return fmt.Errorf("volume %q: size 0: %w", name, errs.ErrInvalid)
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	return c.manage(ctx, xseg.OpClone, name, 0, &wire.Clone{Size: size})
}

// Clone makes volume name a writable clone of the snapshot parent: of the
// parent's size if size is 0, else of size bytes (never smaller than the
// parent; the tail beyond it reads as zeros). It costs the same whatever
// the parent's size: no data is copied.
func (c *Client) Clone(ctx context.Context, parent, name string, size uint64) error {
	if parent == "" {
		return fmt.Errorf("volume %q: clone of no snapshot: %w", name, errs.ErrInvalid)
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	return c.manage(ctx, xseg.OpClone, name, 0, &wire.Clone{Parent: parent, Size: size})
}

// Snapshot takes a read-only snapshot of volume vol, named snap.
func (c *Client) Snapshot(ctx context.Context, vol, snap string) error {
	return c.manage(ctx, xseg.OpSnapshot, vol, 0, &wire.Snapshot{Name: snap})
}

// Remove removes a volume or snapshot; data shared with snapshots and
// clones stays. A volume with sessions on this host (NBD clients, mapped
// devices) is refused with errs.ErrBusy.
func (c *Client) Remove(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpDelete, name, 0, nil)
}

// RemoveForce removes a volume even while it has sessions on this host:
// their I/O fails from then on (EIO), also once a volume of the same name
// is created again.
func (c *Client) RemoveForce(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpDelete, name, xseg.FlagForce, nil)
}

// Rename gives volume or snapshot name the name newName.
func (c *Client) Rename(ctx context.Context, name, newName string) error {
	return c.manage(ctx, xseg.OpRename, name, 0, &wire.Rename{NewName: newName})
}

// Resize sets volume name's size to size bytes. It only grows a volume:
// shrinking fails with errs.ErrInvalid (see ResizeForce).
func (c *Client) Resize(ctx context.Context, name string, size uint64) error {
	return c.resize(ctx, name, size, false)
}

// ResizeForce sets volume name's size, shrinking it if size is smaller:
// the data past the new end is lost.
func (c *Client) ResizeForce(ctx context.Context, name string, size uint64) error {
	return c.resize(ctx, name, size, true)
}

func (c *Client) resize(ctx context.Context, name string, size uint64, force bool) error {
	if size == 0 {
		return fmt.Errorf("volume %q: size 0: %w", name, errs.ErrInvalid)
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	return c.manage(ctx, xseg.OpTruncate, name, 0, &wire.Resize{Size: size, Force: force})
}

// Open opens volume name on this host, as `vlmc open` does: it takes the
// volume's lock for this host (HOST_ID) and keeps it until Close, whatever
// sessions come and go. It fails with errs.ErrLocked ("locked by
// <owner>") while another host holds the lock; it succeeds if this host
// holds it already. For I/O, see OpenSession.
func (c *Client) Open(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpOpen, name, 0, nil)
}

// Close undoes Open: it syncs what this host wrote and releases the
// volume's lock, unless sessions that may write are open here (then the
// last of them releases it).
func (c *Client) Close(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpClose, name, 0, nil)
}

// Lock takes volume name's lock for this host without waiting (as `vlmc
// lock`); errs.ErrLocked while another host holds it. Taking a lock this
// host holds succeeds.
func (c *Client) Lock(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpAcquire, name, xseg.FlagNoSync, nil)
}

// Unlock releases volume name's lock if this host holds it; it fails with
// errs.ErrNotOwner if another host does (see UnlockForce).
func (c *Client) Unlock(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpRelease, name, 0, nil)
}

// UnlockForce breaks volume name's lock whoever holds it, fencing the old
// holder: it waits until the holder can no longer write from what it
// cached, then moves the volume to a fresh epoch (docs/maps.md, Fencing).
// Use it only once the holder is gone for good.
func (c *Client) UnlockForce(ctx context.Context, name string) error {
	return c.manage(ctx, xseg.OpRelease, name, xseg.FlagForce, nil)
}

// Info returns what volume or snapshot name is.
func (c *Client) Info(ctx context.Context, name string) (Info, error) {
	var vi wire.VolumeInfo
	err := c.Do(ctx, Call{Op: xseg.OpInfo, Target: name, BufLen: 4096, Got: func(r *xseg.Request) error {
		return vi.Unmarshal(r.Data())
	}})
	if err != nil {
		return Info{}, err
	}
	return Info{Name: name, Size: vi.Size, ReadOnly: vi.Flags&wire.VolReadOnly != 0, Snapshot: vi.Flags&wire.VolSnapshot != 0,
		Parent: vi.Parent, LockOwner: vi.LockOwner, BlockSize: vi.BlockSize, Epoch: vi.Epoch}, nil
}

// List returns the names of every volume and snapshot, sorted.
func (c *Client) List(ctx context.Context) ([]string, error) {
	var names []string
	after := ""
	for {
		var page wire.Names
		err := c.Do(ctx, Call{Op: xseg.OpList, Payload: &wire.List{After: after}, BufLen: 64 << 10, Got: func(r *xseg.Request) error {
			return page.Unmarshal(r.Data())
		}})
		if err != nil {
			return nil, err
		}
		names = append(names, page.Names...)
		if !page.More || len(page.Names) == 0 {
			return names, nil
		}
		after = page.Names[len(page.Names)-1]
	}
}

// Ping asks vlmcd for an empty answer: whether it serves.
func (c *Client) Ping(ctx context.Context) error {
	return c.Do(ctx, Call{Op: xseg.OpPing})
}
