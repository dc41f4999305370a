package xseg

import "testing"

// TestOpNumbers pins the numbering of ops and flags: it is part of the
// segment format, and a retired number is never given to another op.
func TestOpNumbers(t *testing.T) {
	for _, tc := range []struct {
		op   Op
		n    uint32
		name string
	}{
		{OpNone, 0, "NONE"}, {OpRead, 1, "READ"}, {OpWrite, 2, "WRITE"}, {OpSync, 3, "SYNC"},
		{OpTruncate, 4, "TRUNCATE"}, {OpDelete, 5, "DELETE"}, {OpAcquire, 6, "ACQUIRE"},
		{OpRelease, 7, "RELEASE"}, {OpCopy, 8, "COPY"}, {OpClone, 9, "CLONE"}, {OpInfo, 10, "INFO"},
		{OpMapR, 11, "MAPR"}, {OpMapW, 12, "MAPW"}, {OpOpen, 13, "OPEN"}, {OpClose, 14, "CLOSE"},
		{OpSnapshot, 15, "SNAPSHOT"}, {OpHash, 16, "HASH"},
		{Op(17), 17, "OP(17)"}, // retired: CREATE
		{OpRename, 18, "RENAME"}, {OpFlush, 19, "FLUSH"},
		{Op(20), 20, "OP(20)"}, // retired: UPDATE
		{OpPing, 21, "PING"}, {OpList, 22, "LIST"}, {OpLockOwner, 23, "LOCKOWNER"}, {OpTrim, 24, "TRIM"},
		{OpAllocated, 25, "ALLOCATED"}, {OpLockWait, 26, "LOCKWAIT"}, {OpDrain, 27, "DRAIN"},
		{OpCheck, 28, "CHECK"}, {OpGC, 29, "GC"}, {OpUsage, 30, "USAGE"}, {OpDiff, 31, "DIFF"},
		{OpFlatten, 32, "FLATTEN"}, {OpRollback, 33, "ROLLBACK"}, {OpTree, 34, "TREE"},
		{opMax, 35, "OP(35)"},
	} {
		if uint32(tc.op) != tc.n || tc.op.String() != tc.name {
			t.Errorf("op %d %q, want %d %q", uint32(tc.op), tc.op.String(), tc.n, tc.name)
		}
	}
	for _, tc := range []struct {
		f    Flags
		n    uint32
		name string
	}{
		{0, 0, "0"}, {FlagNoSync, 1, "NOSYNC"}, {FlagFlush, 2, "FLUSH"}, {FlagFUA, 4, "FUA"}, {FlagForce, 8, "FORCE"},
		{FlagFlush | FlagFUA, 6, "FLUSH|FUA"},
		{1 << 4, 16, "0x10"}, // retired: ASSUMEV0
		{FlagForce | 1<<31, 1<<31 | 8, "FORCE|0x80000000"},
	} {
		if uint32(tc.f) != tc.n || tc.f.String() != tc.name {
			t.Errorf("flags %#x %q, want %#x %q", uint32(tc.f), tc.f.String(), tc.n, tc.name)
		}
	}
}
