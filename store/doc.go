// Package store is the object-store seam of Archipelago: the interfaces that
// every backend (memory, files, RADOS, a blocker peer) implements and that
// the blockers and the mapper use.
//
// # Objects
//
// A Store is a flat namespace of named byte objects. An object is created by
// its first WriteAt, grows by writes past its end and by Truncate, and is
// removed by Delete. Reads past the end are short (ReadAt reports how many
// bytes came from the object) and gaps read as zeros.
//
// # Names
//
// An object or lock name is 1 to MaxNameLen bytes, holds neither '/' nor a
// NUL byte and is neither "." nor "..". Anything else is rejected with an
// error wrapping errs.ErrInvalid (see ValidName). A lock owner is 1 to
// MaxNameLen bytes without NUL or newline (see ValidOwner).
//
// # Durability
//
// A write with fua set is on stable storage, and so is the object's
// existence, when WriteAt returns. Every other change (plain writes, Copy,
// Truncate, Delete) is durable after the next successful Sync. After a crash
// a store holds every FUA write and everything synced; changes after the last
// Sync may be there in whole, in part or not at all, but a store never shows
// data that nobody wrote. The storetest package checks this with RunCrash.
//
// # Locks
//
// Locker is an optional ability (assert it with a type assertion): persistent
// locks that survive the crash of the process that took them. TryLock never
// waits; a lock held by another owner is reported as a *LockedError, which
// wraps errs.ErrLocked. Lock names live in their own namespace: a lock and an
// object may share a name, and List never shows locks. LockWatcher, optional
// too, tells a waiter when a lock may have been released, so that waiting
// needs no tight polling.
//
// # Implementations
//
// Four packages implement Store and Locker:
//
//   - memstore keeps objects in memory and simulates crashes, for tests;
//     its Async also starts reads and writes asynchronously and ends them
//     in shuffled order, so that the blocker's asynchronous path (what
//     radosstore serves with librados aio) is tested without Ceph;
//   - filestore keeps one file per object, for the filed blocker;
//   - radosstore keeps one RADOS object per object in a Ceph pool, for the
//     radosd blocker (built only with the tag "ceph");
//   - xsegstore sends every call as a request through the segment to a
//     blocker peer (filed or radosd): the mapper reaches its map and data
//     blockers through it.
//
// radosstore and xsegstore are also LockWatchers; radosstore and
// memstore.Async pass storetest.RunAsync (storetest.AsyncStore). Every implementation must
// pass the suites of package storetest; run through xsegstore against real
// filed and radosd processes, they check those blockers too. The faultstore
// package wraps any store for tests: it counts calls and injects failures,
// crashes with torn writes, damaged reads (a flipped byte, a truncated or
// missing object), system errors and slow I/O.
package store
