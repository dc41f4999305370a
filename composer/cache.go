package composer

import (
	"context"
	"sync"

	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
	"github.com/archipelago-go/archipelago/xseg/payload"
)

// The mapping cache: when the mapper answers with SegCacheable (it holds
// the volume's lock, so nobody else changes the map), vlmcd keeps which
// object holds each block and whether it may be written in place, and
// serves later reads and writes of those blocks without asking the mapper.
// Every operation that can change a map passes through vlmcd (snapshot,
// trim, resize, rename, remove, close, unlock, ...): it drops the volume's
// entries and bumps a generation, so that a mapping fetched before it is
// not stored after it.

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

// invalidate forgets volume name's mappings.
func (m *mapCache) invalidate(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v := m.vols[name]; v != nil {
		v.gen++
		v.blockSize = 0
		clear(v.blocks)
	}
}

// lookup returns the segments of [off, off+n) if every block is cached
// (and, for a write, writable in place), and the generation to store a
// fresh answer under otherwise.
func (m *mapCache) lookup(name string, off, n uint64, write bool) ([]payload.MapSegment, uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vol(name)
	bs := v.blockSize
	if bs == 0 {
		return nil, v.gen, 0
	}
	var segs []payload.MapSegment
	for pos := off; pos < off+n; {
		b := pos / bs
		e, ok := v.blocks[b]
		if !ok || (write && !e.writable) {
			return nil, v.gen, bs
		}
		end := min((b+1)*bs, off+n)
		s := payload.MapSegment{Object: e.object, Offset: pos - b*bs, Size: end - pos}
		if e.zero {
			s = payload.MapSegment{Size: end - pos, Flags: payload.SegZero}
		}
		segs = append(segs, s)
		pos = end
	}
	return segs, v.gen, bs
}

// store keeps the mapper's answer for [off, ...) if it is cacheable and
// nothing invalidated the volume since gen.
func (m *mapCache) store(name string, gen, bs, off uint64, segs []payload.MapSegment) {
	for _, s := range segs {
		if s.Flags&payload.SegCacheable == 0 {
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
	pos := off
	for _, s := range segs {
		for p := pos; p < pos+s.Size; p = (p/bs + 1) * bs {
			e := cachedBlock{zero: true}
			if s.Flags&payload.SegZero == 0 {
				e = cachedBlock{object: s.Object, writable: s.Flags&payload.SegReadOnly == 0}
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
	var vi payload.VolumeInfo
	if rep.Err() != nil || vi.Unmarshal(rep.Data()) != nil {
		return 0
	}
	return uint64(vi.BlockSize)
}
