// Package radosstore is a store.Store and store.Locker on a Ceph RADOS pool,
// for the RADOS blocker (radosd). It needs librados and is built only with
// the build tag "ceph" (go build -tags ceph), so that the default build
// needs no Ceph libraries; without the tag the package is empty.
//
// # Layout
//
// Every object of the store is the RADOS object of the same name in
// Options.Namespace (default: the pool's default namespace). A lock is the
// RADOS object of the lock's name in Options.LockNamespace (default:
// Namespace + ".locks", or "archipelago.locks" for the default namespace),
// holding its owner and a newline. Objects and locks never meet: List walks
// only Namespace, and names that no store.Store could have made (those
// ValidName refuses, written by other tools) are not listed.
//
// # Durability
//
// RADOS acknowledges a write only once every replica of its placement group
// has committed it to stable storage, so every change is durable when its
// call returns, FUA or not; Sync only checks that the store is open. Copy
// reads the source and replaces the destination with one write_full, which
// the OSD applies atomically: readers see the old or the new content, never
// a mix. Truncate is one operation that asserts the object exists and
// truncates it, so a Truncate of a missing object creates nothing.
//
// # Locks
//
// TryLock is one RADOS write operation: create the lock object exclusively
// and write the owner into it. If the object exists, its owner is read:
// the same owner means the lock is already ours (re-entrant, also from
// another process or after a restart: the owner is a name such as HOST_ID,
// not a RADOS client), another means *store.LockedError. Unlock reads the
// owner, checks it and removes the object in one operation guarded by a
// compare of its content (cmpext), so that a lock taken by someone else
// between the read and the remove is never removed. A forced Unlock removes
// whatever owner it read, with the same guard.
//
// RADOS's own advisory locks (cls_lock, IOContext.LockExclusive) are not
// used: they belong to a client instance, so a restarted peer could take
// its own lock back only by breaking it first, and another owner could slip
// in between.
//
// Waiting for a lock is the caller's (the blocker retries TryLock), but
// the store tells it when to retry (store.LockWatcher) with RADOS
// watch/notify. The lock objects are not watched (Unlock deletes them, and
// a deleted object cannot be watched): the lock namespace holds one more
// object, "archipelago/lock-releases" (no lock name holds a '/'), and every
// Unlock that removed a lock notifies it with the lock's name, after the
// removal, in the background and without waiting long for acks. A Store
// with waiters watches that object once, however many waiters it has, acks
// every notification and wakes the waiters of that name; it unwatches 30 s
// after its last waiter left, or at Close. A broken watch is set up again
// (waking every waiter, since releases may have gone unannounced), and
// the waiters' own rarer polling covers what notifications miss: a lock
// broken by a client of an older version, a notification lost.
//
// # Asynchronous reads and writes
//
// ReadAsync and WriteAsync (what radosd serves READ and WRITE with) start
// librados aio operations and call back from the store's one completion
// goroutine. librados' completion threads never call into Go: they queue
// the result in C memory and ring an eventfd the goroutine waits on
// through the Go poller only when it is about to sleep (a cgo callback
// from a foreign thread cost the Go runtime a processor hand-off per
// operation and kept sysmon polling every 20 µs). With the environment
// variable ARCHIPELAGO_RADOS_DIRECT_WAIT=1, an operation started while
// no other is in flight skips that queue and librados' callback thread:
// a goroutine of its own waits for it in a cgo call, woken directly by
// the messenger thread that read the reply (a fifth fewer context
// switches per I/O at depth 1 on the aio path alone, but more in a
// radosd process whose port loop also holds a Go processor in a system
// call; see aio.go); never with GOMAXPROCS=1, where that goroutine would
// hold the only processor.
//
// # Timeouts and errors
//
// The client waits at most Options.OpTimeout (default DefaultOpTimeout) for
// the monitors and the OSDs (rados_mon_op_timeout, rados_osd_op_timeout,
// client_mount_timeout), so that a sick cluster fails requests instead of
// hanging them. librados calls cannot be interrupted: the context is
// checked before each call starts.
//
// Errors wrap a sentinel of package errs and the RADOS error, with the
// operation and the name: ENOENT is errs.ErrNotFound, ENOSPC and EDQUOT
// errs.ErrNoSpace, EFBIG errs.ErrTooLarge, EINVAL and ENAMETOOLONG
// errs.ErrInvalid, anything else (ETIMEDOUT included) errs.ErrIO.
package radosstore
