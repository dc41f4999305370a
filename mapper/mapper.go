// Package mapper is the mapper peer (mapperd): it serves volume operations
// with a volume.Engine whose map store and data store are the blockers
// behind blockerm_port and blockerb_port, reached through the segment.
//
// # Operations (target: the volume)
//
//	MAPR, MAPW  Offset, Size -> payload.MapReply (MAPW copies on write first)
//	CLONE       payload.Clone: Parent "" creates a blank volume of Size
//	SNAPSHOT    payload.Snapshot{Name}
//	DELETE      remove the volume
//	RENAME      payload.Rename{NewName}
//	TRUNCATE    payload.Resize{Size, Force}
//	INFO        -> payload.VolumeInfo
//	LIST        payload.List{Prefix, After} -> payload.Names (volumes)
//	TRIM        whole blocks of Offset, Size become zero blocks
//	ALLOCATED   Offset, Size -> payload.Extents, the ranges not zero blocks
//	OPEN, CLOSE take and release the volume's lock for this host
//	ACQUIRE     take the lock (NOSYNC: try once); RELEASE (FORCE: break
//	            and fence the volume against the old holder)
//	FLUSH       asked by vlmcd before it acknowledges a FLUSH: confirms
//	            that this host still holds the lock of a volume it holds
//	            (ErrFenced if another host broke it; see volume.Engine.Flush)
//	PING        answered at once
//
// A request that fails because another host holds the lock carries a
// payload.LockReply naming the holder.
package mapper

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/xsegstore"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/xseg"
	"github.com/archipelago-go/archipelago/xseg/payload"
)

// Mapper is mapperd's request handler.
type Mapper struct {
	opts                       volume.Options
	blockerMPort, blockerBPort int

	once sync.Once
	e    *volume.Engine
	err  error
}

var _ peer.Handler = (*Mapper)(nil)

// New returns a mapper whose maps live behind the blocker at blockerM and
// data behind the blocker at blockerB.
func New(opts volume.Options, blockerM, blockerB int) *Mapper {
	return &Mapper{opts: opts, blockerMPort: blockerM, blockerBPort: blockerB}
}

// engine builds the engine on the first request, once the peer that
// reaches the blockers exists.
func (m *Mapper) engine(p *peer.Peer) (*volume.Engine, error) {
	m.once.Do(func() {
		opts := m.opts
		opts.Logger = p.Logger() // damaged map objects
		m.e, m.err = volume.New(xsegstore.New(p, m.blockerMPort), xsegstore.New(p, m.blockerBPort), opts)
	})
	return m.e, m.err
}

// Serve implements peer.Handler.
func (m *Mapper) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) error {
	e, err := m.engine(p)
	if err != nil {
		return err
	}
	err = m.serve(ctx, e, r)
	if err != nil {
		peer.ReplyLockOwner(r, err)
		return fmt.Errorf("%s %q: %w", r.Op(), r.Target(), err)
	}
	return nil
}

func (m *Mapper) serve(ctx context.Context, e *volume.Engine, r *xseg.Request) error {
	name := r.Target()
	switch r.Op() {
	case xseg.OpPing:
		return nil
	case xseg.OpMapR, xseg.OpMapW:
		var segs []volume.Segment
		var err error
		if r.Op() == xseg.OpMapR {
			segs, err = e.MapRead(ctx, name, r.Offset(), r.Size())
		} else {
			segs, err = e.MapWrite(ctx, name, r.Offset(), r.Size())
		}
		if err != nil {
			return err
		}
		var cache uint32
		if e.Held(name) {
			cache = payload.SegCacheable
		}
		mr := payload.MapReply{Segments: make([]payload.MapSegment, len(segs))}
		for i, s := range segs {
			ms := payload.MapSegment{Object: s.Object, Offset: s.Offset, Size: s.Size, Flags: cache}
			if s.Zero {
				ms.Flags |= payload.SegZero
			}
			if s.ReadOnly {
				ms.Flags |= payload.SegReadOnly
			}
			mr.Segments[i] = ms
		}
		return peer.Reply(r, &mr)
	case xseg.OpClone:
		var c payload.Clone
		if err := c.Unmarshal(r.Data()); err != nil {
			return err
		}
		if c.Parent == "" {
			return e.Create(ctx, name, c.Size)
		}
		return e.Clone(ctx, c.Parent, name, c.Size)
	case xseg.OpSnapshot:
		var s payload.Snapshot
		if err := s.Unmarshal(r.Data()); err != nil {
			return err
		}
		return e.Snapshot(ctx, name, s.Name)
	case xseg.OpDelete:
		return e.Remove(ctx, name)
	case xseg.OpRename:
		var rn payload.Rename
		if err := rn.Unmarshal(r.Data()); err != nil {
			return err
		}
		return e.Rename(ctx, name, rn.NewName)
	case xseg.OpTruncate:
		var rs payload.Resize
		if err := rs.Unmarshal(r.Data()); err != nil {
			return err
		}
		return e.Resize(ctx, name, rs.Size, rs.Force)
	case xseg.OpInfo:
		in, err := e.Info(ctx, name)
		if err != nil {
			return err
		}
		vi := payload.VolumeInfo{Size: in.Size, BlockSize: in.BlockSize, Epoch: in.Epoch, Parent: in.Parent, LockOwner: in.LockOwner}
		if in.ReadOnly {
			vi.Flags |= payload.VolReadOnly | payload.VolSnapshot
		}
		return peer.Reply(r, &vi)
	case xseg.OpList:
		var l payload.List
		if err := l.Unmarshal(r.Data()); err != nil {
			return err
		}
		var names []string
		err := e.List(ctx, func(n string) error {
			if n > l.After && len(n) >= len(l.Prefix) && n[:len(l.Prefix)] == l.Prefix {
				names = append(names, n)
			}
			return nil
		})
		if err != nil {
			return err
		}
		sort.Strings(names)
		return peer.ReplyNames(r, names)
	case xseg.OpTrim:
		return e.Trim(ctx, name, r.Offset(), r.Size())
	case xseg.OpAllocated:
		ext, err := e.Allocated(ctx, name, r.Offset(), r.Size())
		if err != nil {
			return err
		}
		pe := payload.Extents{Extents: make([]payload.Extent, len(ext))}
		for i, x := range ext {
			pe.Extents[i] = payload.Extent{Offset: x.Offset, Size: x.Size}
		}
		return peer.Reply(r, &pe)
	case xseg.OpOpen:
		return e.Open(ctx, name)
	case xseg.OpClose:
		return e.Close(ctx, name)
	case xseg.OpAcquire:
		return e.Lock(ctx, name)
	case xseg.OpRelease:
		return e.Unlock(ctx, name, r.Flags()&xseg.FlagForce != 0)
	case xseg.OpFlush:
		return e.Flush(ctx, name)
	}
	return fmt.Errorf("the mapper does not serve %s: %w", r.Op(), errs.ErrNotSupported)
}
