package xseg

import "fmt"

// Op is a request operation. The numbering is part of the segment format.
type Op uint32

// Request operations (see the table of operations in docs/xseg.md for who
// serves which). A number once given is never reused: 17 and 20 are
// retired (CREATE and UPDATE, which no peer ever served); a request with a
// retired or unknown op is refused by every peer with ErrNotSupported.
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
	_ // 17: retired (CREATE)
	OpRename
	OpFlush
	_           // 20: retired (UPDATE)
	OpPing      // answered at once; for tests and benchmarks
	OpList      // names of objects (blocker) or volumes (mapper); wire.List -> wire.Names
	OpLockOwner // who holds a lock (blocker): wire.LockReply, ErrNotFound if free
	OpTrim      // whole blocks of [Offset, +Size) become zero blocks (mapper)
	OpAllocated // allocated ranges of [Offset, +Size) (mapper): wire.Extents
	OpLockWait  // wait, without taking it, until lock Target is free (blocker); bounded
	OpDrain     // let the writes in flight on volume Target end, forget its cached mappings (vlmcd; sent by mapperd)
	// The data lifecycle (mapper): a wire.Doc request, a wire.Doc reply.
	OpCheck    // check maps and the objects they reach (read-only)
	OpGC       // collect the map pages and data objects no header reaches
	OpUsage    // bytes provisioned, mapped, held alone and shared (du)
	OpDiff     // extents changed between a snapshot and a later one or the volume
	OpFlatten  // copy a clone's shared blocks so that it needs its parent no more
	OpRollback // the volume's content becomes a snapshot's
	OpTree     // volumes, snapshots and clones with their parents
	opMax
)

var opNames = [...]string{
	OpNone: "NONE", OpRead: "READ", OpWrite: "WRITE", OpSync: "SYNC",
	OpTruncate: "TRUNCATE", OpDelete: "DELETE", OpAcquire: "ACQUIRE",
	OpRelease: "RELEASE", OpCopy: "COPY", OpClone: "CLONE", OpInfo: "INFO",
	OpMapR: "MAPR", OpMapW: "MAPW", OpOpen: "OPEN", OpClose: "CLOSE",
	OpSnapshot: "SNAPSHOT", OpHash: "HASH",
	OpRename: "RENAME", OpFlush: "FLUSH", OpPing: "PING",
	OpList: "LIST", OpLockOwner: "LOCKOWNER", OpTrim: "TRIM", OpAllocated: "ALLOCATED",
	OpLockWait: "LOCKWAIT", OpDrain: "DRAIN",
	OpCheck: "CHECK", OpGC: "GC", OpUsage: "USAGE", OpDiff: "DIFF",
	OpFlatten: "FLATTEN", OpRollback: "ROLLBACK", OpTree: "TREE",
}

func (o Op) String() string {
	if o < opMax && opNames[o] != "" {
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
	// 1<<4 is retired (ASSUMEV0, which no peer ever read); never reuse it.
)

var flagNames = []string{"NOSYNC", "FLUSH", "FUA", "FORCE"}

func (f Flags) String() string {
	s := ""
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	if rest := f &^ (1<<len(flagNames) - 1); rest != 0 {
		if s != "" {
			s += "|"
		}
		s += fmt.Sprintf("%#x", uint32(rest))
	}
	if s == "" {
		return "0"
	}
	return s
}
