package xseg

import (
	"fmt"
	"math/bits"

	"github.com/archipelago-go/archipelago/errs"
)

// The heap is a run of UnitSize units tracked by a bitmap (1 = allocated),
// allocated next-fit under heapLock. Every allocation belongs to exactly one
// request (its dataOff/dataCap with owned=1), and those fields change only
// under heapLock together with the bitmap. So the bitmap can always be
// rebuilt from the requests: that is what a process does when it takes the
// lock over from a dead holder, and what Check verifies.

// lockHeap takes heapLock, rebuilding the bitmap if its holder died.
func (s *Segment) lockHeap() {
	if pidLock(&s.h.heapLock, s.pid) {
		s.rebuildHeap()
	}
}

func (s *Segment) unlockHeap() { pidUnlock(&s.h.heapLock, s.pid) }

// rebuildHeap recomputes the bitmap from the requests' owned buffers.
// Called with heapLock held.
func (s *Segment) rebuildHeap() {
	words := (s.units + 63) / 64
	for i := uint32(0); i < words; i++ {
		*s.bitmapWord(i) = 0
	}
	used := uint32(0)
	for i := uint32(0); i < s.nreqs; i++ {
		r := s.req(i)
		if r.owned == 0 {
			continue
		}
		if st, _ := unpackState(r.state.Load()); st == stFree {
			// A free request owns nothing; its release was cut short.
			r.owned, r.dataOff, r.dataCap = 0, 0, 0
			continue
		}
		u, n := s.unitsOf(r)
		s.setRange(u, n, true)
		used += n
	}
	s.h.heapUsed.Store(used)
	s.h.repairs.Add(1)
}

func (s *Segment) unitsOf(r *reqHdr) (first, n uint32) {
	return uint32((r.dataOff - s.h.heapOff) / UnitSize), uint32((r.dataCap + UnitSize - 1) / UnitSize)
}

func (s *Segment) setRange(u, n uint32, v bool) {
	for n > 0 {
		w := s.bitmapWord(u / 64)
		b := u % 64
		k := min(64-b, n)
		mask := ^uint64(0)
		if k < 64 {
			mask = (uint64(1)<<k - 1) << b
		}
		if v {
			*w |= mask
		} else {
			*w &^= mask
		}
		u += k
		n -= k
	}
}

// findFree returns the first unit of a free run of n units at or after
// start and before end, scanning word by word.
func (s *Segment) findFree(start, end, n uint32) (uint32, bool) {
	u := start
	for u+n <= end {
		// Skip allocated units.
		w := *s.bitmapWord(u / 64) >> (u % 64)
		if w&1 != 0 {
			ones := uint32(bits.TrailingZeros64(^w))
			if ones == 0 || ones > 64-u%64 {
				ones = 64 - u%64
			}
			u += ones
			continue
		}
		// Measure the free run from u.
		run := uint32(0)
		v := u
		for run < n && v < end {
			w := *s.bitmapWord(v / 64) >> (v % 64)
			avail := 64 - v%64
			z := uint32(bits.TrailingZeros64(w))
			if z > avail {
				z = avail
			}
			run += z
			v += z
			if z < avail {
				break
			}
		}
		if run >= n {
			return u, true
		}
		u = v
	}
	return 0, false
}

// allocBuf gives request r an owned buffer of at least size bytes. Called
// with heapLock held.
func (s *Segment) allocBuf(r *reqHdr, size uint64) error {
	n64 := (size + UnitSize - 1) / UnitSize
	if n64 == 0 {
		n64 = 1
	}
	if n64 > uint64(s.units) {
		return fmt.Errorf("buffer of %d bytes exceeds the segment heap of %d bytes: %w", size, uint64(s.units)*UnitSize, errs.ErrTooLarge)
	}
	n := uint32(n64)
	hint := s.h.heapHint.Load() % s.units
	u, ok := s.findFree(hint, s.units, n)
	if !ok {
		u, ok = s.findFree(0, min(hint+n, s.units), n)
	}
	if !ok {
		return fmt.Errorf("segment heap: no %d free contiguous bytes (%d of %d in use): %w", n64*UnitSize, uint64(s.h.heapUsed.Load())*UnitSize, uint64(s.units)*UnitSize, errs.ErrNoSpace)
	}
	s.setRange(u, n, true)
	s.h.heapUsed.Add(n)
	s.h.heapHint.Store(u + n)
	r.dataOff = s.h.heapOff + uint64(u)*UnitSize
	r.dataCap = uint64(n) * UnitSize
	r.owned = 1
	r.borrow = 0
	return nil
}

// freeBuf releases r's owned buffer, if any. Called with heapLock held.
func (s *Segment) freeBuf(r *reqHdr) {
	if r.owned != 0 {
		u, n := s.unitsOf(r)
		s.setRange(u, n, false)
		s.h.heapUsed.Add(^(n - 1))
		// The next allocation starts here: a buffer just freed is likely
		// still in the CPU's caches (a peer's copy into it is then cheaper).
		s.h.heapHint.Store(u)
	}
	r.owned, r.dataOff, r.dataCap, r.borrow = 0, 0, 0, 0
}
