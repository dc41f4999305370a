// Package nbd is an NBD (Network Block Device) server: it serves the
// exports of a Backend to QEMU, libnbd tools (nbdinfo, nbdcopy), fio's nbd
// engine and the kernel client, over a Unix socket or TCP.
//
// # Using it
//
//	srv := nbd.NewServer(backend, nbd.Options{})
//	l, _ := net.Listen("unix", "/run/archipelago/nbd.sock")
//	err := srv.Serve(ctx, l) // returns after ctx ends and clients drained
//
// Clients reach an export by the URI that URI returns, for example
// nbd+unix:///vol1?socket=/run/archipelago/nbd.sock (package nbduri builds it). Server.Clients counts
// the connections open, so that an operator's tool can refuse to stop
// while clients are connected.
//
// # Protocol
//
// The server speaks the fixed newstyle handshake (NBD_FLAG_FIXED_NEWSTYLE,
// NBD_FLAG_NO_ZEROES) with the options NBD_OPT_GO, NBD_OPT_INFO
// (NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE always, NBD_INFO_NAME and
// NBD_INFO_DESCRIPTION on request), NBD_OPT_LIST, NBD_OPT_EXPORT_NAME,
// NBD_OPT_ABORT, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_{LIST,SET}_META_CONTEXT
// with the one context base:allocation, and NBD_OPT_STARTTLS on a listener
// served with ServeTLS. Other options (extended headers) get
// NBD_REP_ERR_UNSUP; an unknown export NBD_REP_ERR_UNKNOWN.
//
// The whole handshake (options, TLS, the opening of the export) has one
// deadline, Options.HandshakeTimeout (10 s): a client that has not
// entered transmission by then is disconnected.
//
// # TLS
//
// ServeTLS(ctx, l, &TLS{Config: cfg, Require: true}) is the protocol's
// FORCEDTLS mode: before NBD_OPT_STARTTLS every option but NBD_OPT_ABORT
// gets NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME (which cannot be
// refused) drops the client. NBD_OPT_STARTTLS is answered with
// NBD_REP_ACK, then TLS (1.2 at least) runs over the connection; what was
// negotiated before (structured replies, meta contexts) is forgotten; a
// second STARTTLS is NBD_REP_ERR_INVALID. Bytes a client sent after
// STARTTLS before its answer (they would pass as sent under TLS) close the
// connection. Without Require, TLS is the client's choice. LoadTLSDir
// reads a directory in the layout of QEMU's tls-creds-x509: clients
// authenticate with a certificate signed by its ca-cert.pem.
//
// In transmission it serves READ (with structured replies, holes reported
// by a SparseReader go out as NBD_REPLY_TYPE_OFFSET_HOLE chunks; with
// NBD_CMD_FLAG_DF one data chunk), WRITE (with FUA), FLUSH, TRIM,
// WRITE_ZEROES (with NO_HOLE), BLOCK_STATUS (holes as
// NBD_STATE_HOLE|NBD_STATE_ZERO, REQ_ONE honoured) and DISC. CACHE and
// FAST_ZERO are not offered. Transmission flags: HAS_FLAGS, SEND_FLUSH,
// SEND_FUA, CAN_MULTI_CONN, SEND_DF with structured replies, SEND_TRIM
// when the export is a Trimmer, SEND_WRITE_ZEROES, and READ_ONLY for
// read-only exports.
//
// # Requests in flight
//
// Each connection has one reader goroutine and at most
// Options.MaxInFlight (64 by default) requests and 128 MiB of payload in
// flight, replies waiting to be sent included. A READ or WRITE into a
// buffer of the export's BufferPool, when the export is an AsyncIO, is
// started by the reader, which reads on; every other request gets a
// goroutine. One writer goroutine sends queued replies in batches; a
// reply to the only request in flight is written at once by whoever has
// it, if the socket takes it without waiting. Replies go out in
// completion order, not request order. Several connections to the same export are served
// concurrently (multi-conn); the Export contract makes flushes on one
// visible to all.
//
// # Errors
//
// A request the server cannot serve gets an NBD error reply and the
// connection goes on: beyond the end (EINVAL, or ENOSPC for writes), above
// the maximum payload (EINVAL; EOVERFLOW for a structured READ), misaligned
// to the advertised minimum block size (EINVAL), unknown command or flag
// (EINVAL), a write to a read-only export (EPERM). A refused WRITE's
// payload is still read, so the stream stays in sync. Only an unparsable
// stream (a bad request magic) closes the connection. Backend errors map
// by errors.Is on the sentinels of package errs: ErrReadOnly to EPERM,
// ErrInvalid to EINVAL, ErrNoSpace to ENOSPC, ErrShutdown to ESHUTDOWN,
// anything else to EIO. With structured replies, errors carry the error's
// text.
//
// # Shutdown
//
// When Serve's context ends the server stops accepting, stops reading
// requests, lets requests in flight complete (their context is not
// cancelled) and send their replies, then closes every connection and
// closes the export handles.
//
// # Backends
//
// A Backend opens Exports by name. An Export reads, writes and flushes;
// optional abilities are separate interfaces (Trimmer, ZeroWriter, Mapper,
// SparseReader, BlockSizer, Describer, BufferPool, AsyncIO). MemBackend is an
// in-memory, sparse reference implementation of all of them but AsyncIO.
package nbd
