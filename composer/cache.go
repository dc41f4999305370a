package composer

import (
	"context"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/peer"
	engine "github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// The mapping cache: when the mapper answers with PieceCacheable (it holds
// the volume's lock, so nobody else changes the map), vlmcd keeps which
// object holds each block and whether it may be written in place, and
// serves later reads and writes of those blocks without asking the mapper.
// Every operation that can change a map passes through vlmcd (snapshot,
// trim, resize, rename, remove, close, unlock, ...): it drops the volume's
// entries and bumps a generation, so that a mapping fetched before it is
// not stored after it.

//
// A mapping is used for volume.MappingLease after the request that
// fetched it was sent, and then asked for again: another host may have
// broken the lock with force (vlmc unlock -f), and the mapper, which
// confirms its hold when its last look is older than volume.ConfirmEvery,
// then answers ErrFenced, on which the volume's entries go (see
// docs/maps.md, "Fencing"). So once the forced unlock returns (it waits
// longer than both) this host's next write asks the mapper and fails, even
// if its client never flushes; a FLUSH always asks.

// maxCached bounds the blocks cached per volume; past it the volume's
// entries are dropped.
const maxCached = 1 << 16

type cachedBlock struct {
	object   string
	zero     bool
	writable bool
}

type volCache struct {
	gen       uint64
	blockSize uint64 // 0: not known yet
	blocks    map[uint64]cachedBlock
	until     time.Time // the entries' lease ends (volume.MappingLease)
}

type mapCache struct {
	mu   sync.Mutex
	vols map[string]*volCache
}

func (m *mapCache) vol(name string) *volCache {
	if m.vols == nil {
		m.vols = map[string]*volCache{}
	}
	v := m.vols[name]
	if v == nil {
		v = &volCache{blocks: map[uint64]cachedBlock{}}
		m.vols[name] = v
	}
	return v
}

// invalidate forgets the mappings of the volume target names, under its
// name and under every reference NAME/ID to it (entries are kept per
// target, so a reference to a removed incarnation never finds those of
// the volume that has the name now).
func (m *mapCache) invalidate(target string) {
	name := volName(target)
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.vols {
		if volName(k) != name {
			continue
		}
		v.gen++
		v.blockSize = 0
		clear(v.blocks)
	}
}

// lookup returns the pieces of [off, off+n) if every block is cached
// (and, for a write, writable in place), and the generation to store a
// fresh answer under otherwise.
func (m *mapCache) lookup(name string, off, n uint64, write bool) ([]wire.MapPiece, uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vol(name)
	bs := v.blockSize
	if bs == 0 {
		return nil, v.gen, 0
	}
	if !time.Now().Before(v.until) {
		return nil, v.gen, bs
	}
	var segs []wire.MapPiece
	for pos := off; pos < off+n; {
		b := pos / bs
		e, ok := v.blocks[b]
		if !ok || (write && !e.writable) {
			return nil, v.gen, bs
		}
		end := min((b+1)*bs, off+n)
		s := wire.MapPiece{Object: e.object, Offset: pos - b*bs, Size: end - pos}
		if e.zero {
			s = wire.MapPiece{Size: end - pos, Flags: wire.PieceZero}
		}
		segs = append(segs, s)
		pos = end
	}
	return segs, v.gen, bs
}

// store keeps the mapper's answer for [off, ...) if it is cacheable and
// nothing invalidated the volume since gen; asked is when the request was
// sent, the start of the entries' lease.
func (m *mapCache) store(name string, gen, bs, off uint64, segs []wire.MapPiece, asked time.Time) {
	for _, s := range segs {
		if s.Flags&wire.PieceCacheable == 0 {
			return
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vol(name)
	if v.gen != gen || bs == 0 {
		return
	}
	v.blockSize = bs
	if len(v.blocks) > maxCached {
		clear(v.blocks)
	}
	if until := asked.Add(engine.MappingLease); until.After(v.until) {
		v.until = until
	}
	pos := off
	for _, s := range segs {
		for p := pos; p < pos+s.Size; p = (p/bs + 1) * bs {
			e := cachedBlock{zero: true}
			if s.Flags&wire.PieceZero == 0 {
				e = cachedBlock{object: s.Object, writable: s.Flags&wire.PieceReadOnly == 0}
			}
			v.blocks[p/bs] = e
		}
		pos += s.Size
	}
}

// blockSize learns a volume's block size from the mapper (INFO).
func (c *Composer) blockSize(ctx context.Context, p *peer.Peer, name string) uint64 {
	r, err := p.Alloc(4096)
	if err != nil {
		return 0
	}
	r.SetOp(xseg.OpInfo)
	if r.SetTarget(name) != nil {
		p.Put(r)
		return 0
	}
	rep, err := p.Call(context.WithoutCancel(ctx), r, c.mapper)
	if err != nil {
		return 0
	}
	defer p.Put(rep)
	var vi wire.VolumeInfo
	if rep.Err() != nil || vi.Unmarshal(rep.Data()) != nil {
		return 0
	}
	return uint64(vi.BlockSize)
}
