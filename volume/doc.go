// Package volume is the mapper's engine: it owns the maps of thin,
// snapshottable, clonable volumes and does their copy-on-write, on top of
// two object stores — maps (headers, map pages, epoch records and the
// volume locks; it must be a store.Locker) and data (data objects). It uses
// nothing but the store.Store and store.Locker interfaces, and never moves
// data itself: copy-on-write is a server-side Store.Copy. The on-storage
// formats and the reasoning behind them are in docs/maps.md.
//
// # Volumes
//
// A volume is a size and a map from each block (DefaultBlockSize, 4 MiB,
// unless Options.BlockSize says otherwise) to a data object. A block that
// was never written is a zero block: it has no object and reads as zeros.
// Snapshots are read-only volumes; clones are read-write volumes made from
// a snapshot, the same size or larger. Snapshot and Clone cost the same for
// a 1 GiB and a 1 PiB volume: the map is a radix tree of pages shared
// between a volume, its snapshots and their clones, and copied on write.
//
// # I/O
//
// The volume composer asks MapRead or MapWrite for the objects behind a
// range and does the data I/O itself. MapWrite makes every block of the
// range writable first (copying a shared object, or naming a new one for a
// zero block) and returns once the map change is durable; Trim turns whole
// blocks back into zero blocks; Allocated tells which ranges are not zero
// blocks. A piece MapWrite returned may name an object that does not
// exist until its data is written: readers treat a missing object as zeros.
//
// # Locks
//
// Each volume has a persistent store lock, "<name>_lock", taken for
// Options.Owner and re-entrant for that owner, so a host that restarts
// with the same identity takes its locks back. MapRead and Allocated never
// take it: if the engine holds it they answer from its cache, else they
// read the header and the pages the volume owns from storage each time
// (the pages it does not own, shared with snapshots and never written in
// place, stay in a bounded engine-wide cache); MapWrite and Trim wait
// while another owner holds it, trying again when the maps store announces
// a release (store.LockWatcher) and otherwise by polling; Create, Clone,
// Snapshot, Remove, Rename, Resize, Open and Lock try once and fail with
// an error that wraps a *store.LockedError and says "locked by <owner>".
// MapWrite keeps the lock it took while a session that may write or an
// Open wants it, else until Close (see CloseSession); management
// operations give back a lock they took. The engine caches a volume's
// header and owned pages only while it holds its lock. Unlock with force breaks another owner's lock: the owner that lost it is
// not told, so break only the lock of a host known to be gone.
//
// # Errors
//
// Errors wrap the sentinels of package errs with the volume's name:
// ErrNotFound, ErrExists, ErrLocked, ErrInvalid (bad name or range, clone
// of a non-snapshot or smaller than its parent, shrink without force),
// ErrReadOnly (writing, trimming or resizing a snapshot), ErrTooLarge
// (beyond MaxSize), ErrCorrupt and ErrVersion (damaged or foreign
// on-storage data).
//
// # Concurrency
//
// An Engine is safe for concurrent use. Per volume, I/O runs concurrently;
// concurrent MapWrites of one block share a single copy; map changes are
// serialized; management operations exclude I/O on their volumes.
package volume
