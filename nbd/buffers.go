package nbd

import (
	"math/bits"
	"sync"
)

// The server's own payload buffers: one sync.Pool per power-of-two size
// class from 4 KiB to 32 MiB. Requests above the largest class are refused
// before a buffer is taken.
const (
	minClassShift = 12
	maxClassShift = 25
)

var classes [maxClassShift - minClassShift + 1]sync.Pool

// heapBuffer is a Buffer from the server's pools.
type heapBuffer struct {
	b     []byte
	class int // -1: not pooled
}

func (h *heapBuffer) Bytes() []byte { return h.b }

func (h *heapBuffer) Release() {
	if h.class >= 0 {
		h.b = h.b[:cap(h.b)]
		classes[h.class].Put(h)
	}
}

// getBuffer returns a buffer of n bytes, from the export's pool when it has
// one and lends a buffer, else from the server's.
func getBuffer(pool BufferPool, n int) Buffer {
	if pool != nil {
		if b := pool.Get(n); b != nil {
			return b
		}
	}
	c := 0
	if n > 1<<minClassShift {
		c = bits.Len(uint(n-1)) - minClassShift
	}
	if c >= len(classes) {
		return &heapBuffer{b: make([]byte, n), class: -1}
	}
	if v := classes[c].Get(); v != nil {
		h := v.(*heapBuffer)
		h.b = h.b[:n]
		return h
	}
	return &heapBuffer{b: make([]byte, n, 1<<(c+minClassShift)), class: c}
}

// zeroes is shared read-only memory for WRITE_ZEROES without a ZeroWriter.
var zeroes = make([]byte, 1<<20)
