// Package peer is the runtime of an Archipelago peer: a process that
// serves requests arriving through a shared-memory segment (package xseg)
// and sends its own requests to other peers through it. filed and radosd
// (the blockers), mapperd's mapper and vlmcd (the composer) are peers;
// nulld answers everything at once, for tests and benchmarks.
//
// # Ports and requests
//
// A segment has numbered ports. A peer binds a range of them (Options:
// PortStart..PortEnd); a request is addressed to a port, and whoever binds
// it serves the request. A request is a slot of the segment's pool: an op
// (READ, WRITE, ACQUIRE, ...; xseg.Op), a target name, an offset and a
// size, flags, and a buffer in the segment's heap holding the data or a
// payload (package wire). Its answer is the same slot, sent back with an
// error code (package errs) and, for some ops, a payload in the buffer.
// Programs that only send requests (vlmc, the map daemon, tests) use a
// Client (Dial, NewClient), which binds one dynamic port.
//
// # The life of a request
//
//  1. A submitter takes a request from the pool (Client.Alloc,
//     Peer.Alloc), fills it, and submits it to a port (Client.Call, or
//     Peer.Call, Submit, SubmitFunc). From then on the request is not
//     the submitter's to touch until its reply comes.
//  2. The loop of the destination port (one goroutine per bound port)
//     accepts it, at most Options.NrOps requests in flight per peer. An
//     InlineHandler serves it there and then; an AsyncHandler may start
//     it there (ServeAsync); otherwise one of Options.NrThreads workers
//     calls the Handler's Serve.
//  3. Serve returns a Result: Served, and the peer answers with the error
//     Serve returned; Forwarded, after the handler passed the request on
//     to another port with Peer.Forward (vlmcd forwards volume management
//     to the mapper), and whoever serves it there answers; or Deferred,
//     and the handler answers later with Peer.Answer from another
//     goroutine (a blocker waiting for a lock holds no worker).
//  4. The answer goes back to the port that submitted the request (even
//     after forwarding), whose loop hands it to the waiting caller; the
//     caller reads it (Request.Err, ReplyErr for the server's message,
//     the payload), then releases it with Put.
//
// A peer that dies with requests in flight does not leave them hanging:
// the segment gives them back to their submitters failed with
// errs.ErrPeerDied, and a port whose owner died can be bound again
// (xseg's recovery).
//
// # Who owns what
//
// The segment's memory belongs to xseg. A Peer holds its mapping and its
// ports until Stop; a Client its port (and the mapping, if Dial made it)
// until Close. A request belongs to one party at a time: its submitter
// until it is submitted, the serving peer until it answers (or
// forwards), its submitter again from the reply until Put. The port loop
// alone touches its port's rings. A handler must not touch a request once
// it has forwarded it, nor keep one it deferred except to answer it.
//
// Start binds the ports and runs the loops and workers; Stop (on SIGTERM,
// in the programs) takes no new requests, lets those in flight end
// (cancelling their context after Options.DrainTimeout), answers what is
// still queued with errs.ErrShutdown, unbinds the ports and removes the
// pidfile (TakePidfile: one live process per role).
//
// Reply, ReplyNames, ReplyLockOwner and ReplyErrorText put an answer's
// payload into a request; ReplyErr and LockOwnerOf read a failed reply.
// Options.Wait tunes how idle port loops wait (a knob for measurements).
//
// The program side (flags, configuration, signals, logging, the
// environment's knobs) is in internal/daemon; docs/xseg.md describes the
// segment and this runtime in detail.
package peer
