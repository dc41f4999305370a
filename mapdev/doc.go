// Package mapdev maps volumes to block devices: `vlmc map` without kernel
// NBD or ublk.
//
// # How a volume becomes /dev/loopN
//
// A map daemon (one process per mapped volume) joins the segment, opens
// the volume (Remote, a Device over vlmcd) and serves it as the single
// regular file of a FUSE filesystem (Mount). A loop device with direct
// I/O is then attached to that file (Attach), so that
//
//	/dev/loopN  ──loop, O_DIRECT──►  RUN_DIR/mnt/<id>/<volume>  ──FUSE──►  daemon  ──segment──►  vlmcd
//
// every block request becomes one FUSE request and one volume request,
// with no page cache in between (the file is opened FOPEN_DIRECT_IO and
// the kernel may send many requests at once, asynchronously).
//
// # Mapping of operations
//
//	loop / FUSE                        Device
//	READ, WRITE                        ReadAt, WriteAt
//	FLUSH (fsync of the backing file)  Flush
//	DISCARD, WRITE_ZEROES (fallocate)  Zero (optional ability Zeroer)
//
// Snapshots are served read-only (mode 0444, writable opens fail with
// EROFS) and attached with --read-only.
//
// # Records
//
// A Registry (NewRegistry) keeps one record per mapping in
// RUN_DIR/mapped/<id>.json (State; config.MappedDir; `archipelago stop`
// refuses while that directory holds entries) and the daemon's lock in
// RUN_DIR/mnt/<id>.lock (config.MountDir): a flock held for the daemon's
// lifetime, which tells a live mapping from one whose daemon died
// (Registry.Alive) without trusting process ids.
//
// # The map daemon
//
// Map (`vlmc map`) reserves an id, starts the daemon (`vlmc map-serve`,
// which calls Serve) handing it the id's lock, and returns once the
// daemon has saved the record. Unmap (`vlmc unmap`) detaches the device
// and stops the daemon; List (`vlmc showmapped`) reads the records and
// says which are still mapped.
//
// # Growing a mapped volume
//
// A mapping follows its volume's growth without a remap. Resize (`vlmc
// resize`) resizes the volume, then Refresh signals the map daemons of
// the volume on this host (SIGHUP) and waits, up to RefreshWait, until
// each device shows the new size; the daemons also poll the size every
// GrowPoll, for a resize on another host. A daemon that sees the volume
// grow opens a session of the new size (Remote.Grow; the old session
// closes when its last request ends), drops the kernel's cached
// attributes of the file and fetches the new size (Server.Resized,
// FUSE_NOTIFY_INVAL_INODE), then refreshes the loop device's capacity
// (SetCapacity, LOOP_SET_CAPACITY as `losetup -c`). Data stays where it
// was; the new tail reads zeros. A shrink is not followed: Resize refuses
// to shrink a volume mapped here (errs.ErrBusy), and a daemon that sees
// its volume shrink (a resize --force on another host) keeps the device's
// size and logs a warning; I/O past the volume's end then fails.
//
// # Lifecycle
//
//	Map: Reserve id (flock) → start the daemon; Serve: Remote → Mount →
//	Attach → Save record
//	... serve ...
//	Unmap: Detach → SIGTERM; Serve: Unmount (waits for the loop to let
//	go, then detaches lazily) → Flush → Remove record
package mapdev
