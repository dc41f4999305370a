// Package xseg is the shared-memory segment through which Archipelago's
// processes talk: a file under /dev/shm (ShmDir) that every peer and tool
// maps, holding numbered ports, a pool of requests and a heap for their
// buffers. A process submits a request to a port; whoever binds that
// port accepts it, serves it and responds; the reply comes back to the
// submitter's port. No byte of a request is copied between processes and
// no system call is made per request while they are busy. Package peer
// runs processes on top of it; this package is only the shared memory and
// its rules.
//
// The segment (format version 2) is, in order: a 4 KiB header (magic,
// version, geometry, the heap lock, counters); one 256-byte record per
// port (owner pid and start time, bind generation, the futex wake word
// and the doorbell's bell word, ring cursors, counters, role name); two
// rings per port, of requests queued to it and of replies coming back to
// it, each as large as the pool so that a push never fails; the request
// pool, 512 bytes per request (state word, op, flags, inline target name,
// offset, size, serviced, error code, source and destination ports,
// buffer, forwarding path); a bitmap of the heap's 4 KiB units; and the
// heap, whose buffers are 4 KiB aligned. Every reference inside is an
// offset from the segment's start.
//
// Create makes a segment (Config), Join maps an existing one, Destroy
// removes it. Bind and BindDynamic take a port (Port): Alloc, Submit,
// Accept, Respond, Forward, Receive and Put move a Request through its
// states, each held by exactly one process at a time. Locks and states
// name their holder's pid, so that Recover (run by every waiting process)
// gives back what a killed process held: its queued and accepted requests
// fail back to their submitters with errs.ErrPeerDied, and its ports can
// be bound again. Check verifies the segment's invariants (`xseg check`).
//
// docs/xseg.md describes the layout field by field, the operations (Op)
// and flags with who serves them, the request life cycle, locks that
// survive SIGKILL, recovery, and waking without polling (the futex and
// the doorbells).
package xseg
