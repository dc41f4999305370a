package xseg

import (
	"fmt"
	"unsafe"

	"github.com/archipelago-go/archipelago/errs"
)

// Request is a process's handle on one request of the pool. Only the
// process (and goroutine) that currently holds the request may touch its
// fields: the submitter between Alloc and Submit and after Receive, the
// serving peer between Accept and Respond or Forward.
type Request struct {
	s   *Segment
	idx uint32
	h   *reqHdr
}

func (s *Segment) handle(i uint32) *Request { return &Request{s: s, idx: i, h: s.req(i)} }

// Index is the request's slot in the pool; with Gen it names the request.
func (r *Request) Index() int { return int(r.idx) }

// Gen is bumped each time the slot is allocated.
func (r *Request) Gen() uint32 { return r.h.gen.Load() }

func (r *Request) Op() Op             { return Op(r.h.op) }
func (r *Request) SetOp(o Op)         { r.h.op = uint32(o) }
func (r *Request) Flags() Flags       { return Flags(r.h.flags) }
func (r *Request) SetFlags(f Flags)   { r.h.flags = uint32(f) }
func (r *Request) Offset() uint64     { return r.h.offset }
func (r *Request) SetOffset(o uint64) { r.h.offset = o }

// Size is the number of bytes the operation covers (for READ and WRITE) or
// the length of the payload in the buffer (for the other ops).
func (r *Request) Size() uint64     { return r.h.size }
func (r *Request) SetSize(n uint64) { r.h.size = n }

// Serviced is how many bytes the server handled.
func (r *Request) Serviced() uint64     { return r.h.serviced }
func (r *Request) SetServiced(n uint64) { r.h.serviced = n }

// Src is the port the reply goes to; Dst the port serving the request.
func (r *Request) Src() int { return int(r.h.src) }
func (r *Request) Dst() int { return int(r.h.dst) }

// Err is the error the server answered with, nil on success.
func (r *Request) Err() error { return errs.FromCode(errs.Code(r.h.errcode)) }

// Target is the name of the object or volume the request is about.
func (r *Request) Target() string {
	n := min(r.h.targetLen, MaxTarget)
	return string(r.h.target[:n])
}

// SetTarget sets the target name (at most MaxTarget bytes).
func (r *Request) SetTarget(t string) error {
	if len(t) > MaxTarget {
		return fmt.Errorf("target %.40q...: %d bytes, limit %d: %w", t, len(t), MaxTarget, errs.ErrTooLarge)
	}
	copy(r.h.target[:], t)
	r.h.targetLen = uint32(len(t))
	return nil
}

// Buffer is the request's whole data buffer in the segment (nil if none).
// Writes to it are seen by the peer that serves the request.
func (r *Request) Buffer() []byte {
	if r.h.dataCap == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(r.s.at(r.h.dataOff)), r.h.dataCap)
}

// Data is the first Size bytes of the buffer (all of it if Size is larger).
func (r *Request) Data() []byte {
	b := r.Buffer()
	return b[:min(uint64(len(b)), r.h.size)]
}

// Borrow points this request's buffer at part of parent's buffer, without
// copying: the way a peer splits one request into several. The request
// must have no buffer of its own, and parent must stay held (not answered
// or released) until every borrower is done. If the holder of parent dies,
// recovery waits for the borrowers before failing parent back.
func (r *Request) Borrow(parent *Request, off, n uint64) error {
	if r.h.owned != 0 {
		return fmt.Errorf("request %d: borrow into a request with its own buffer: %w", r.idx, errs.ErrInvalid)
	}
	if off+n > parent.h.dataCap || off+n < off {
		return fmt.Errorf("request %d: borrow [%d,%d) beyond parent buffer of %d bytes: %w", r.idx, off, off+n, parent.h.dataCap, errs.ErrInvalid)
	}
	r.h.dataOff = parent.h.dataOff + off
	r.h.dataCap = n
	r.h.borrow = parent.idx + 1
	return nil
}

// Path lists the ports that forwarded this request, oldest first.
func (r *Request) Path() []int {
	n := min(r.h.pathLen, MaxPath)
	p := make([]int, n)
	for i := range n {
		p[i] = int(r.h.path[i])
	}
	return p
}

func (r *Request) String() string {
	return fmt.Sprintf("req#%d.%d{%s %q off=%d size=%d flags=%s %d->%d}", r.idx, r.Gen(), r.Op(), r.Target(), r.h.offset, r.h.size, r.Flags(), r.h.src, r.h.dst)
}
