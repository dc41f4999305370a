// Package config reads Archipelago's configuration: the INI file
// /etc/archipelago/archipelago.conf, in the layout of the original's later
// versions, merged over a built-in default.
//
// # Layers
//
// Every key has a default, so a machine runs with no file at all, and a
// file holds only the keys it changes. A value is taken from, in order:
//
//  1. the file (Load's path, else $ARCHIPELAGO_CONFIG, else DefaultPath);
//  2. the built-in default, DefaultText (printed by
//     `archipelago config --default`), for the section of the same name;
//     for a role whose file section changes its type, only the common keys;
//  3. the per-type defaults, for roles of one's own: a role section that
//     is not in the default needs only `type`;
//  4. values derived from others: HOST_ID is the hostname, lock_dir is
//     <archip_dir>/locks, socket is <RUN_DIR>/<role>.sock, pool is the
//     role name, a role without ports gets the first free static one (a
//     block endpoint: the first free one of XSEGBD_START..XSEGBD_END), and
//     blockerb_port, blockerm_port, blocker_port, mapper_port and
//     vlmcd_port point at the first port of the role of the right type
//     named blockerb, blockerm, mapperd or vlmcd, else the first (for
//     blockerm_port the second) role of that type in ORDER. Moving
//     portno_start alone keeps the range's width.
//
// ROLES in a file replaces the default's list; ORDER then follows ROLES
// unless given. Config.Format prints the effective result, every key
// spelled out, and Parse reads it back to the same Config.
//
// # Sections and keys
//
//	[ARCHIPELAGO]  HOST_ID, RUN_DIR, LOG_DIR, GC_INTERVAL (a duration,
//	               0 for never: mapperd's periodic garbage collection)
//	[XSEG]         SEGMENT_NAME, SEGMENT_PORTS, SEGMENT_DYNPORTS,
//	               SEGMENT_SIZE (MiB), XSEGBD_START, XSEGBD_END,
//	               VTOOL_START, VTOOL_END (see below)
//	[PEERS]        ROLES, ORDER, HOSTED (names separated by spaces or
//	               commas; HOSTED may be `all`: every role)
//	[<role>]       type, portno_start, portno_end, log_level (0-3),
//	               nr_ops, nr_threads, and per type:
//	  file_blocker   archip_dir, lock_dir, fdcache, direct
//	  rados_blocker  pool, ceph_conf, cephx_id (ceph_id is accepted
//	                 as its old name)
//	  mapperd        blockerb_port, blockerm_port, metrics_listen
//	  vlmcd          blocker_port, mapper_port, metrics_listen
//	  nbd_endpoint   vlmcd_port, mapper_port, socket, listen,
//	                 handshake_timeout (seconds), tls (off, require),
//	                 tls_dir, tls_verify_clients
//
// Section and role names are case-sensitive, keys are not.
//
// HOSTED names the roles that `archipelago start` runs together in one
// archipelagod process (HostProgram), as goroutines sharing the segment;
// each other role runs in its own program. Their output goes to one log,
// HostLogFile, which LogFile returns for each of them.
//
// VTOOL_START and VTOOL_END are the ports the original reserved for its
// vlmc tool. They are accepted, so that its files load, and checked like
// any port range, but no program uses them: vlmc, like every tool, binds
// a dynamic port (SEGMENT_DYNPORTS and up).
//
// # Checks
//
// Parse reports every problem at once (errors.Join), in file order, each as
// "FILE:LINE: [SECTION] KEY = VALUE: what is wrong" and each wrapping
// errs.ErrInvalid. A value that came from the default is marked
// "(default)" and blamed on its section's line in the file, if any. It
// checks: syntax, duplicate sections and keys, unknown sections and keys
// (per type), values (numbers, ranges, booleans true/false/yes/no/1/0,
// log levels, absolute paths, addresses, durations), ROLES against the sections and
// ORDER as a permutation of ROLES, HOSTED as roles of ROLES of a type
// archipelagod hosts (HostableTypes), port ranges inside the segment and
// below SEGMENT_DYNPORTS, no overlap between roles, with XSEGBD (where the
// block endpoints, and only they, bind) or with VTOOL, the *_port keys
// pointing at a role of the right type, sockets and listen addresses (metrics_listen
// included) not shared, and a rough rule for SEGMENT_SIZE after the xseg package's
// layout (rings, ports and request pool leave at least half the segment
// for buffers; the pool holds the sum of the roles' nr_ops).
//
// # The reader
//
// The INI reader is our own, about a hundred lines: `[section]` headers,
// `key = value` lines, comments starting with # or ; on a line of their
// own or after a header or a value: a # or ; that starts a value or
// follows a space or tab starts a comment, one inside a word (`a#b`) is
// kept, and `\#` or `\;` writes one anywhere (Format writes every # and ;
// so). Values are otherwise taken verbatim (no quoting, continuation
// lines or interpolation). gopkg.in/ini.v1 is well kept and served, but it keeps
// no line numbers for keys, so its errors could not name the line, and it
// merges duplicate keys and sections silently where we want to refuse
// them.
package config
