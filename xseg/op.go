package xseg

import "fmt"

// Op is a request operation. The numbering is part of the segment format.
type Op uint32

// Request operations (see docs/xseg.md for who serves which).
const (
	OpNone Op = iota
	OpRead
	OpWrite
	OpSync
	OpTruncate
	OpDelete
	OpAcquire
	OpRelease
	OpCopy
	OpClone
	OpInfo
	OpMapR
	OpMapW
	OpOpen
	OpClose
	OpSnapshot
	OpHash
	OpCreate
	OpRename
	OpFlush
	OpUpdate
	OpPing      // answered at once; for tests and benchmarks
	OpList      // names of objects (blocker) or volumes (mapper); wire.List -> wire.Names
	OpLockOwner // who holds a lock (blocker): wire.LockReply, ErrNotFound if free
	OpTrim      // whole blocks of [Offset, +Size) become zero blocks (mapper)
	OpAllocated // allocated ranges of [Offset, +Size) (mapper): wire.Extents
	OpLockWait  // wait, without taking it, until lock Target is free (blocker); bounded
	OpDrain     // let the writes in flight on volume Target end, forget its cached mappings (vlmcd; sent by mapperd)
	opMax
)

var opNames = [...]string{
	OpNone: "NONE", OpRead: "READ", OpWrite: "WRITE", OpSync: "SYNC",
	OpTruncate: "TRUNCATE", OpDelete: "DELETE", OpAcquire: "ACQUIRE",
	OpRelease: "RELEASE", OpCopy: "COPY", OpClone: "CLONE", OpInfo: "INFO",
	OpMapR: "MAPR", OpMapW: "MAPW", OpOpen: "OPEN", OpClose: "CLOSE",
	OpSnapshot: "SNAPSHOT", OpHash: "HASH", OpCreate: "CREATE",
	OpRename: "RENAME", OpFlush: "FLUSH", OpUpdate: "UPDATE", OpPing: "PING",
	OpList: "LIST", OpLockOwner: "LOCKOWNER", OpTrim: "TRIM", OpAllocated: "ALLOCATED",
	OpLockWait: "LOCKWAIT", OpDrain: "DRAIN",
}

func (o Op) String() string {
	if o < opMax {
		return opNames[o]
	}
	return fmt.Sprintf("OP(%d)", uint32(o))
}

// Flags modify a request.
type Flags uint32

const (
	// FlagNoSync: try once, do not wait (e.g. ACQUIRE of a held lock fails at once).
	FlagNoSync Flags = 1 << iota
	// FlagFlush: make everything acknowledged before this request durable first.
	FlagFlush
	// FlagFUA: this write is durable when it is answered.
	FlagFUA
	// FlagForce: override a safety check (break another owner's lock, shrink).
	FlagForce
	// FlagAssumeV0: treat a map without a header as the original's v0 format.
	FlagAssumeV0
)

func (f Flags) String() string {
	s := ""
	for i, n := range []string{"NOSYNC", "FLUSH", "FUA", "FORCE", "ASSUMEV0"} {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	if s == "" {
		return "0"
	}
	return s
}
