package xseg

import (
	"sync/atomic"
	"unsafe"
)

// Format constants. Everything inside the segment is addressed by offsets
// from its base; no Go pointer is ever stored in it.
const (
	// Magic identifies an Archipelago-in-Go segment ("ARCHXSEG").
	Magic uint64 = 0x4152434858534547
	// Version is the layout version; Join refuses any other.
	Version uint32 = 2

	// UnitSize is the heap allocation unit. Buffers are UnitSize-aligned,
	// which also makes them fit for O_DIRECT.
	UnitSize = 4096
	// MaxTarget is the longest target name a request holds.
	MaxTarget = 255
	// MaxPath is the depth of a request's forwarding path.
	MaxPath = 8

	headerSize = 4096
	portSize   = 256
	reqSize    = 512
)

// Request states. The state word of a request packs the state in bits 32..39
// and, for the states held by a process, its pid in bits 0..31.
const (
	stFree     = 0 // in the pool
	stAlloc    = 1 // held by the process pid (filling it, or reading a reply)
	stQueued   = 2 // in the request ring of port dst
	stAccepted = 3 // being served by the process pid at port dst
	stReplied  = 4 // in the reply ring of port src
)

func packState(st, pid uint32) uint64 { return uint64(st)<<32 | uint64(pid) }
func unpackState(w uint64) (st, pid uint32) {
	return uint32(w >> 32 & 0xff), uint32(w)
}

// header is the first page of the segment.
type header struct {
	magic    atomic.Uint64 // written last at creation
	version  uint32
	_        uint32
	size     uint64 // bytes
	nports   uint32
	dynports uint32
	nreqs    uint32 // power of two
	units    uint32 // heap units
	portsOff uint64
	ringsOff uint64
	reqsOff  uint64
	bmapOff  uint64
	heapOff  uint64

	heapLock    atomic.Uint32 // pid lock over bitmap and request buffer fields
	heapHint    atomic.Uint32 // next-fit start unit
	heapUsed    atomic.Uint32 // units allocated
	janitorLock atomic.Uint32 // pid lock over Recover
	reqHint     atomic.Uint32 // next pool slot to try
	creator     uint32
	created     int64 // unix nanoseconds
	repairs     atomic.Uint64
	reclaimed   atomic.Uint64
}

// port is one port: its owner, its lock, its wake word and ring cursors.
// The rings themselves (nreqs uint32 slots each) live in the rings area.
type port struct {
	lock       atomic.Uint32 // pid lock over both rings and the owner fields
	ownerPID   atomic.Uint32
	ownerStart atomic.Uint64 // owner's start time (clock ticks since boot)
	seq        atomic.Uint32 // futex word: bumped on every push
	waiters    atomic.Uint32 // processes sleeping on seq
	reqHead    atomic.Uint32
	reqTail    atomic.Uint32
	repHead    atomic.Uint32
	repTail    atomic.Uint32
	submitted  atomic.Uint64 // requests queued to this port
	served     atomic.Uint64 // requests answered by this port's owner
	failed     atomic.Uint64 // of which failed
	received   atomic.Uint64 // replies taken by this port's owner
	inflight   atomic.Int32  // accepted, not answered
	bindGen    atomic.Uint32 // bumped at every bind
	bell       atomic.Uint32 // bindGen whose owner sleeps on a doorbell; 0: on seq
	name       [32]byte      // role name, for tools
}

// reqHdr is one request of the pool.
type reqHdr struct {
	state      atomic.Uint64
	gen        atomic.Uint32 // bumped at every allocation
	op         uint32
	flags      uint32
	errcode    uint32
	src        uint32 // port that gets the reply
	srcGen     uint32 // bindGen of src when submitted: a rebound port gets no stale replies
	dst        uint32 // port it is queued at or served by
	offset     uint64
	size       uint64
	serviced   uint64
	dataOff    uint64 // absolute segment offset of the data buffer
	dataCap    uint64 // its capacity
	owned      uint32 // 1 when dataOff/dataCap is an allocation of this request
	borrow     uint32 // 1 + index of the request whose buffer this one borrows
	targetLen  uint32
	pathLen    uint32
	path       [MaxPath]uint32
	submitNano int64
	target     [MaxTarget + 1]byte
}

func init() {
	// The layout is part of the format: fail loudly if a field change
	// makes a struct outgrow its slot.
	if unsafe.Sizeof(header{}) > headerSize || unsafe.Sizeof(port{}) > portSize || unsafe.Sizeof(reqHdr{}) > reqSize {
		panic("xseg: layout structs outgrew their slots")
	}
}
