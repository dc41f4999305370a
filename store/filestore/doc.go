// Package filestore is a store.Store and store.Locker that keeps one file per
// object under a directory, for the filed blocker.
//
// # Layout
//
// An object lives at Dir/AA/BB/NAME, where AABB are the first two bytes, in
// lower-case hex, of the 32-bit FNV-1a hash of NAME: objects spread over
// 65536 directories and no directory grows too large to search. The
// directories are made on first use and never removed. A lock lives at
// LockDir/AA/BB/NAME the same way (LockDir defaults to Dir/locks) and holds
// its owner and a newline. Dir/tmp and LockDir/tmp hold the temporary files
// of copies and locks in flight; Open removes those older than an hour.
// Dir/FORMAT names the layout and its version ("archipelago-filestore 1");
// Open refuses another version with errs.ErrVersion. Nothing else in Dir is
// an object: List walks only the AA/BB directories.
//
// Several Stores, in one process or in several on one or more hosts, may
// share a Dir and a LockDir (see "Open files" for what makes the file cache
// safe then).
//
// # Durability
//
// A write with fua set does pwrite and fdatasync, then fsyncs every
// directory on the object's path (Dir/AA/BB, Dir/AA, Dir) whose entries
// changed since it was last synced — in particular the parent when the write
// created the file — so the data and the object's existence are stable when
// WriteAt returns.
//
// An entry this Store did not make may not be durable either: another
// process or host may have created the file (or its directories) without a
// sync, or this process before a restart. So the first FUA write or Sync
// through a newly opened file also fsyncs its directory, unless an fsync of
// it started after the open, and, once per directory and process, the two
// above it. A file kept open costs this once; one the cache closed, once per
// reopen.
//
// Every other change is recorded: a plain write or Truncate records the
// object, a create, Delete or Copy records the directories it changed.
// Sync fdatasyncs every object recorded since the last Sync (and its path,
// as above) and then fsyncs every recorded directory. A file closed by the descriptor cache stays
// recorded by name, so Sync reopens it and still covers it. Syncs run one at
// a time; if an fdatasync or fsync fails, the kernel may already have dropped
// the unwritten pages, so that Sync and every later one fails: reopen the
// store and recover.
//
// Copy copies the source into a new file in Dir/tmp and renames it over the
// destination, so readers see the old or the new content, never a mix; when
// the destination exists, the new file is fdatasynced before the rename so
// that a crash cannot leave a torn destination either. Locks are durable at
// once (see below).
//
// # Open files
//
// At most Options.FDCache objects are kept open, least recently used first
// out; a file in use is never closed under its user. Delete and Copy drop the
// cached file of the object they replace. With NoFDCache each operation opens
// and closes its file.
//
// Another Store on the same Dir (another filed, another host) may delete,
// re-create or replace an object that this one holds open; I/O through the
// old file would then read what is gone and write where nobody reads. So
// before every use a cached file is checked against its path: one fstatat
// of its name in its directory (held open with O_PATH, so each cached
// object costs one more descriptor), whose device and inode must be the
// file's. A file the path
// no longer names is dropped, and the operation opens the path anew (or
// finds the object missing). The check costs one system call per
// operation; opening the file every time (NoFDCache) costs more, see
// BenchmarkReadAt. It relies on the filesystem's stat being coherent
// between the hosts, as it is on one machine (NFS clients may cache
// attributes for seconds: mount it with noac, actimeo=0 or lookupcache=none
// there).
//
// # Direct I/O
//
// With Options.Direct each open object also gets an O_DIRECT descriptor,
// used for a read or write only when its offset, length and buffer address
// are multiples of DirectAlign (buffers from shared memory are page-aligned);
// other I/O goes through the page cache. Open checks once, with a probe
// file, that the filesystem accepts O_DIRECT, and fails with an error
// wrapping errs.ErrNotSupported that names the directory if it does not.
//
// # Locks
//
// TryLock writes the owner into a temporary file, fsyncs it and link()s it
// to the lock's path: the link either creates the lock whole or fails with
// EEXIST, and then the current owner is read. Taken locks are made durable
// by fsyncing the lock's directory. Unlock reads the owner, checks it,
// unlinks the lock and fsyncs the directory; unlocks of one Store run one at
// a time, but two processes breaking the same lock at once may race.
//
// # Errors
//
// Errors wrap a sentinel of package errs and the system error: ENOENT is
// errs.ErrNotFound, ENOSPC and EDQUOT are errs.ErrNoSpace, anything else is
// errs.ErrIO, each with the operation and the object's name.
package filestore
