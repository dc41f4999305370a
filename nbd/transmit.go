package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The transmission phase.
//
// One reader goroutine parses requests (reading each WRITE payload in full,
// even when the request is refused, so the stream stays in sync), checks
// them and starts a goroutine per request. A semaphore of
// Options.MaxInFlight tokens bounds the requests taken: the reader takes a
// token before reading a payload, and the writer gives it back once the
// reply is on the socket, so payloads, read buffers and queued replies are
// all bounded. A second, weighted semaphore bounds their bytes
// (maxInFlightBytes). A READ or WRITE whose payload is a buffer of the
// export's BufferPool goes through its AsyncIO when it has one: no
// goroutine of ours waits for it, and the reply is queued from wherever
// the export completes it. Other requests get a handler goroutine each.
// One writer goroutine sends the replies queued on a channel, whatever is
// queued with one writev, so a busy connection pays fewer system calls
// than requests; nobody that queues a reply ever waits on a slow client.
// A reply to the only request in flight skips the writer: whoever has it
// writes it with one non-blocking writev, and leaves what the socket did
// not take to the writer, which sends it before anything else.
//
// Ending: on NBD_CMD_DISC, end of stream or server shutdown the reader
// stops; the session waits for every handler, closes the reply channel,
// waits for the writer to send the last replies and closes the export.
// A request with a bad magic ends the connection at once (the stream can
// no longer be parsed), after the handlers in flight have returned.

type session struct {
	c          *conn
	name       string
	exp        Export
	size       uint64
	flags      uint16
	ro         bool
	structured bool
	alloc      bool // base:allocation selected for this export
	minBlock   uint32
	prefBlock  uint32
	maxPayload uint32

	trimmer Trimmer
	zw      ZeroWriter
	mapper  Mapper
	sparse  SparseReader
	pool    BufferPool
	async   AsyncIO // only with pool: its READ/WRITE need a lent Buffer

	sem     chan struct{}
	budget  budget
	replies chan *reply // nil: a direct write left s.pending for the writer

	// Direct replies: with one request in flight, the goroutine that
	// has its reply (the one the export answered in) writes it to the
	// socket itself if the socket takes it without waiting, instead of
	// waking the writer. raw is nil when that cannot be done (TLS, a
	// connection without a file descriptor). wmu is held while writing
	// to the socket; pending is a reply written in part directly, whose
	// rest the writer sends before anything else; wfailed: a write
	// failed, nothing more is sent.
	raw     syscall.RawConn
	wmu     sync.Mutex
	pending *reply
	wfailed bool
	dw      directWrite    // under wmu
	wg      sync.WaitGroup // handlers running
	cancel  context.CancelFunc
}

func (c *conn) newSession(h *haggle, name string, exp Export) *session {
	s := &session{
		c:          c,
		name:       name,
		exp:        exp,
		size:       exp.Size(),
		ro:         exp.ReadOnly(),
		structured: h.structured,
		alloc:      h.structured && h.metaAlloc && h.metaName == name,
	}
	s.minBlock, s.prefBlock, s.maxPayload = blockSizes(exp, c.s.opts.MaxPayload)
	s.trimmer, _ = exp.(Trimmer)
	s.zw, _ = exp.(ZeroWriter)
	s.mapper, _ = exp.(Mapper)
	s.sparse, _ = exp.(SparseReader)
	s.pool, _ = exp.(BufferPool)
	if s.pool != nil {
		s.async, _ = exp.(AsyncIO)
	}
	s.flags = flagHasFlags | flagSendFlush | flagSendFUA | flagCanMultiConn
	if s.ro {
		s.flags |= flagReadOnly
	} else {
		s.flags |= flagSendWriteZeroes
		if s.trimmer != nil {
			s.flags |= flagSendTrim
		}
	}
	if s.structured {
		s.flags |= flagSendDF
	}
	if sc, ok := c.nc.(syscall.Conn); ok && !c.tlsOn {
		s.raw, _ = sc.SyscallConn()
		s.dw.fn = s.dw.writev
	}
	return s
}

// directWrite is the scratch of session.direct's writev: fn, bound once,
// is what RawConn.Write calls, so that a write allocates nothing.
type directWrite struct {
	iov net.Buffers
	n   int
	err error
	fn  func(fd uintptr) bool
}

func (d *directWrite) writev(fd uintptr) bool {
	d.n, d.err = unix.Writev(int(fd), d.iov)
	return true // never wait for the socket here
}

// request is one parsed request.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
	buf    Buffer // WRITE payload
	cost   int64  // payload bytes taken from the budget
}

var errBadMagic = fmt.Errorf("%w: bad request magic", errProtocol)

func (s *session) run(ctx context.Context) {
	// Requests in flight finish even when the server stops; their context
	// ends only when the connection breaks.
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer s.cancel()
	n := s.c.s.opts.MaxInFlight
	s.sem = make(chan struct{}, n)
	s.budget.init(maxInFlightBytes)
	s.replies = make(chan *reply, n)
	writerDone := make(chan struct{})
	go s.writer(writerDone)

	err := s.readLoop(ctx)
	switch {
	case errors.Is(err, errBadMagic):
		s.c.log.Warn("nbd: closing connection", "export", s.name, "err", err)
		s.cancel()
		s.c.nc.Close()
	case err != nil && !errors.Is(err, io.EOF) && !s.c.isStopping():
		s.c.log.Debug("nbd: connection read", "export", s.name, "err", err)
	}
	if err != nil && !s.c.isStopping() {
		// The client left without NBD_CMD_DISC: nobody will read the
		// replies of the requests in flight, so their context ends (a
		// write waiting for a lock gives up rather than keep the
		// connection, and the client count, alive).
		s.cancel()
	}
	s.wg.Wait()
	close(s.replies)
	<-writerDone
	if err := s.exp.Close(); err != nil {
		s.c.log.Warn("nbd: closing export", "export", s.name, "err", err)
	}
}

func (c *conn) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// readLoop reads and dispatches requests until NBD_CMD_DISC (nil), the end
// of the stream or a malformed request.
func (s *session) readLoop(ctx context.Context) error {
	var h [requestSize]byte
	for {
		if _, err := io.ReadFull(s.c.br, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(h[0:]) != requestMagic {
			return fmt.Errorf("%w %#x", errBadMagic, binary.BigEndian.Uint32(h[0:]))
		}
		r := request{
			flags:  binary.BigEndian.Uint16(h[4:]),
			typ:    binary.BigEndian.Uint16(h[6:]),
			cookie: binary.BigEndian.Uint64(h[8:]),
			off:    binary.BigEndian.Uint64(h[16:]),
			length: binary.BigEndian.Uint32(h[24:]),
		}
		if r.typ == cmdDisc {
			return nil
		}
		s.sem <- struct{}{} // given back by the writer
		code, msg := s.check(&r)
		if r.typ == cmdWrite {
			if code != 0 {
				if _, err := io.CopyN(io.Discard, s.c.br, int64(r.length)); err != nil {
					<-s.sem
					return err
				}
			} else {
				r.cost = int64(r.length)
				s.budget.acquire(r.cost)
				r.buf = getBuffer(s.pool, int(r.length))
				if _, err := io.ReadFull(s.c.br, r.buf.Bytes()); err != nil {
					r.buf.Release()
					s.budget.release(r.cost)
					<-s.sem
					return err
				}
			}
		}
		if code != 0 {
			s.replyError(&r, code, msg)
			continue
		}
		if r.typ == cmdRead {
			r.cost = int64(r.length)
			s.budget.acquire(r.cost)
		}
		if s.async != nil && s.start(ctx, &r) {
			continue
		}
		s.wg.Add(1)
		go s.handle(ctx, r)
	}
}

// start starts a checked READ or WRITE through the export's AsyncIO, whose
// done callback queues the reply: no goroutine waits for it. It returns
// false if the request is not one that goes this way (the caller then
// starts a handler).
func (s *session) start(ctx context.Context, r *request) bool {
	if r.length == 0 || r.typ != cmdWrite && r.typ != cmdRead {
		return false
	}
	if r.typ == cmdRead && s.sparse != nil && s.structured && r.flags&cmdFlagDF == 0 {
		return false
	}
	o := asyncOps.Get().(*asyncOp)
	o.r, o.s = *r, s
	s.wg.Add(1)
	var ok bool
	if r.typ == cmdWrite {
		ok = s.async.StartWrite(ctx, r.buf.Bytes(), r.off, r.flags&cmdFlagFUA != 0, o.fn)
	} else {
		o.buf = getBuffer(s.pool, int(r.length))
		if ok = s.async.StartRead(ctx, o.buf.Bytes(), r.off, o.fn); !ok {
			o.buf.Release()
		}
	}
	if !ok {
		s.wg.Done()
		o.free()
	}
	return ok
}

// asyncOp is a READ or WRITE started through AsyncIO: the request, the
// READ's buffer, and the callback bound to them once (asyncOps pools
// them, so that starting one allocates nothing).
type asyncOp struct {
	r   request
	s   *session
	buf Buffer
	fn  func(error)
}

var asyncOps sync.Pool // of *asyncOp

func init() {
	asyncOps.New = func() any {
		o := new(asyncOp)
		o.fn = o.done
		return o
	}
}

func (o *asyncOp) done(err error) {
	s := o.s
	if o.r.typ == cmdWrite {
		o.r.buf.Release()
		s.done(&o.r, err)
	} else {
		s.readDone(&o.r, o.buf, nil, err)
	}
	o.free()
	s.wg.Done()
}

func (o *asyncOp) free() {
	o.r, o.s, o.buf = request{}, nil, nil
	asyncOps.Put(o)
}

// check validates a request against the negotiated flags, the export's
// size and its block sizes. It returns the NBD error and a message for a
// request that must be refused, 0 otherwise.
func (s *session) check(r *request) (uint32, string) {
	allowed := uint16(cmdFlagFUA) // valid on every command
	write, ranged := false, true
	switch r.typ {
	case cmdRead:
		if s.structured {
			allowed |= cmdFlagDF
		}
	case cmdWrite:
		write = true
	case cmdFlush:
		ranged = false
	case cmdTrim:
		write = true
		if s.trimmer == nil && !s.ro {
			return einval, "trim is not supported by this export"
		}
	case cmdWriteZeroes:
		write = true
		allowed |= cmdFlagNoHole
	case cmdBlockStatus:
		allowed |= cmdFlagReqOne
		if !s.alloc {
			return einval, "no meta context selected (NBD_OPT_SET_META_CONTEXT base:allocation)"
		}
	default:
		return einval, fmt.Sprintf("command %d not supported", r.typ)
	}
	if r.flags&^allowed != 0 {
		return einval, fmt.Sprintf("flags %#x not valid for command %d", r.flags&^allowed, r.typ)
	}
	if write && s.ro {
		return eperm, "export is read-only"
	}
	if !ranged {
		return 0, ""
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > s.maxPayload {
		msg := fmt.Sprintf("request of %d bytes above the maximum payload (%d)", r.length, s.maxPayload)
		if r.typ == cmdRead && s.structured {
			return eoverflow, msg
		}
		return einval, msg
	}
	if r.off > s.size || uint64(r.length) > s.size-r.off {
		msg := fmt.Sprintf("request %d+%d beyond the end of the export (%d)", r.off, r.length, s.size)
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			return enospc, msg
		}
		return einval, msg
	}
	if m := uint64(s.minBlock); r.off%m != 0 || uint64(r.length)%m != 0 {
		return einval, fmt.Sprintf("request %d+%d not aligned to %d bytes", r.off, r.length, m)
	}
	if r.typ == cmdBlockStatus && r.length == 0 {
		return einval, "block status of 0 bytes"
	}
	return 0, ""
}

// handle serves one checked request and queues its reply.
func (s *session) handle(ctx context.Context, r request) {
	defer s.wg.Done()
	fua := r.flags&cmdFlagFUA != 0
	var err error
	switch r.typ {
	case cmdRead:
		s.read(ctx, &r)
		return
	case cmdBlockStatus:
		s.blockStatus(ctx, &r)
		return
	case cmdWrite:
		if r.length > 0 {
			err = s.exp.WriteAt(ctx, r.buf.Bytes(), r.off, fua)
		}
		r.buf.Release()
	case cmdFlush:
		err = s.exp.Flush(ctx)
	case cmdTrim:
		if r.length > 0 {
			err = s.trimmer.Trim(ctx, r.off, uint64(r.length))
			if err == nil && fua {
				err = s.exp.Flush(ctx)
			}
		}
	case cmdWriteZeroes:
		err = s.writeZeroes(ctx, r.off, uint64(r.length), fua, r.flags&cmdFlagNoHole == 0)
	}
	s.done(&r, err)
}

func (s *session) writeZeroes(ctx context.Context, off, n uint64, fua, mayTrim bool) error {
	if n == 0 {
		return nil
	}
	if s.zw != nil {
		return s.zw.WriteZeroes(ctx, off, n, fua, mayTrim)
	}
	for n > 0 {
		k := min(n, uint64(len(zeroes)))
		if err := s.exp.WriteAt(ctx, zeroes[:k], off, fua); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// minHole is the smallest hole sent as an NBD_REPLY_TYPE_OFFSET_HOLE
// chunk; smaller ones go as data. maxChunks bounds the chunks of one read
// reply; a more fragmented read goes as one data chunk.
const (
	minHole   = 4096
	maxChunks = 64
)

func (s *session) read(ctx context.Context, r *request) {
	n := int(r.length)
	if n == 0 {
		s.done(r, nil)
		return
	}
	buf := getBuffer(s.pool, n)
	p := buf.Bytes()
	var exts []Extent
	var err error
	if s.sparse != nil && s.structured && r.flags&cmdFlagDF == 0 {
		exts, err = s.sparse.ReadSparse(ctx, p, r.off)
	} else {
		err = s.exp.ReadAt(ctx, p, r.off)
	}
	s.readDone(r, buf, exts, err)
}

// readDone queues the reply to the READ r whose data is in buf (exts: the
// holes, from a SparseReader), or its error.
func (s *session) readDone(r *request, buf Buffer, exts []Extent, err error) {
	if err != nil {
		buf.Release()
		s.fail(r, err)
		return
	}
	n := int(r.length)
	p := buf.Bytes()
	rep := newReply()
	rep.buf = buf
	if !s.structured {
		rep.simple(0, r.cookie)
		rep.data(p)
		s.queue(r, rep)
		return
	}
	spans := readSpans(exts, r.off, uint64(n))
	for i, sp := range spans {
		var fl uint16
		if i == len(spans)-1 {
			fl = replyFlagDone
		}
		if sp.hole {
			rep.chunk(fl, replyOffsetHole, r.cookie, 12)
			rep.hdr = binary.BigEndian.AppendUint64(rep.hdr, sp.off)
			rep.hdr = binary.BigEndian.AppendUint32(rep.hdr, uint32(sp.n))
			continue
		}
		rep.chunk(fl, replyOffsetData, r.cookie, 8+uint32(sp.n))
		rep.hdr = binary.BigEndian.AppendUint64(rep.hdr, sp.off)
		rep.data(p[sp.off-r.off : sp.off-r.off+sp.n])
	}
	s.queue(r, rep)
}

type span struct {
	off, n uint64
	hole   bool
}

// readSpans turns the extents of a sparse read of n bytes at off into the
// content chunks to send: adjacent runs merged, small holes sent as data,
// and one data chunk when the extents are missing, do not add up to n, or
// are too fragmented.
func readSpans(exts []Extent, off, n uint64) []span {
	all := []span{{off: off, n: n}}
	var spans []span
	pos := off
	for _, e := range exts {
		if e.Length == 0 {
			continue
		}
		if e.Length > off+n-pos {
			return all
		}
		hole := e.Hole && e.Length >= minHole
		if k := len(spans); k > 0 && spans[k-1].hole == hole {
			spans[k-1].n += e.Length
		} else {
			spans = append(spans, span{off: pos, n: e.Length, hole: hole})
		}
		pos += e.Length
	}
	if pos != off+n || len(spans) > maxChunks {
		return all
	}
	return spans
}

func (s *session) blockStatus(ctx context.Context, r *request) {
	n := uint64(r.length)
	var exts []Extent
	if s.mapper != nil {
		var err error
		if exts, err = s.mapper.Extents(ctx, r.off, n); err != nil {
			s.fail(r, err)
			return
		}
	}
	rep := newReply()
	// Descriptors: clipped to the request, merged, at most maxExtents
	// (one with REQ_ONE); everything when the mapper said nothing.
	type desc struct {
		n     uint64
		flags uint32
	}
	var ds []desc
	var sum uint64
	for _, e := range exts {
		if sum == n || len(ds) == maxExtents {
			break
		}
		l := min(e.Length, n-sum)
		if l == 0 {
			continue
		}
		var fl uint32
		if e.Hole {
			fl = stateHole | stateZero
		}
		if k := len(ds); k > 0 && ds[k-1].flags == fl {
			ds[k-1].n += l
		} else {
			if r.flags&cmdFlagReqOne != 0 && len(ds) == 1 {
				break
			}
			ds = append(ds, desc{l, fl})
		}
		sum += l
	}
	if len(ds) == 0 {
		ds = append(ds, desc{n, 0})
	}
	rep.chunk(replyFlagDone, replyBlockStatus, r.cookie, 4+8*uint32(len(ds)))
	rep.hdr = binary.BigEndian.AppendUint32(rep.hdr, metaIDAllocation)
	for _, d := range ds {
		rep.hdr = binary.BigEndian.AppendUint32(rep.hdr, uint32(d.n))
		rep.hdr = binary.BigEndian.AppendUint32(rep.hdr, d.flags)
	}
	s.queue(r, rep)
}

// done queues the reply of a request without payload.
func (s *session) done(r *request, err error) {
	if err != nil {
		s.fail(r, err)
		return
	}
	rep := newReply()
	if s.structured && r.typ == cmdRead {
		rep.chunk(replyFlagDone, replyNone, r.cookie, 0)
	} else {
		rep.simple(0, r.cookie)
	}
	s.queue(r, rep)
}

// fail queues the error reply for a backend error.
func (s *session) fail(r *request, err error) {
	s.c.log.Debug("nbd: request failed", "export", s.name, "cmd", r.typ,
		"offset", r.off, "length", r.length, "err", err)
	s.replyError(r, errno(err), err.Error())
}

// replyError queues an error reply: a structured error chunk with the
// message when structured replies are on, else a simple reply.
func (s *session) replyError(r *request, code uint32, msg string) {
	rep := newReply()
	if !s.structured {
		rep.simple(code, r.cookie)
		s.queue(r, rep)
		return
	}
	if len(msg) > maxString {
		msg = msg[:maxString]
	}
	rep.chunk(replyFlagDone, replyError, r.cookie, 6+uint32(len(msg)))
	rep.hdr = binary.BigEndian.AppendUint32(rep.hdr, code)
	rep.hdr = binary.BigEndian.AppendUint16(rep.hdr, uint16(len(msg)))
	rep.hdr = append(rep.hdr, msg...)
	s.queue(r, rep)
}

// queue sends the reply to r: at once when it is the only request in
// flight and the socket takes it without waiting, else through the
// writer. It never blocks: the channel has room for every semaphore
// token.
func (s *session) queue(r *request, rep *reply) {
	rep.cost = r.cost
	if s.raw != nil && len(s.sem) == 1 && s.direct(rep) {
		return
	}
	s.replies <- rep
}

// direct writes rep to the socket without waiting (one non-blocking
// writev) and reports whether rep is taken care of: sent whole, or sent in
// part and left to the writer as s.pending. It returns false, having
// written nothing, when another goroutine is writing, the socket is full
// or the write failed (the writer then sends rep, and meets the error).
// With several requests in flight the writer batches their replies into
// one writev, so queue calls direct only when one is.
func (s *session) direct(rep *reply) bool {
	if !s.wmu.TryLock() {
		return false
	}
	if s.wfailed || s.pending != nil {
		s.wmu.Unlock()
		return false
	}
	d := &s.dw
	d.iov = rep.appendTo(d.iov[:0])
	if cerr := s.raw.Write(d.fn); cerr != nil {
		d.err = cerr
	}
	n, err := d.n, d.err
	total := 0
	for _, b := range d.iov {
		total += len(b)
	}
	clear(d.iov)
	switch {
	case err == nil && n == total:
		s.wmu.Unlock()
		directWrites.whole.Add(1)
		s.sent(rep)
		return true
	case err == nil && n > 0:
		directWrites.partial.Add(1)
		rep.skip = n
		s.pending = rep
		s.wmu.Unlock()
		s.replies <- nil // wake the writer: its token is rep's
		return true
	}
	s.wmu.Unlock()
	return false
}

// directWrites counts the replies session.direct sent whole, and those it
// sent in part (for tests).
var directWrites struct{ whole, partial atomic.Int64 }

// sent gives back what a reply held once it is on the socket (or lost
// with it).
func (s *session) sent(rep *reply) {
	s.budget.release(rep.cost)
	rep.release()
	<-s.sem
}

// writer sends queued replies, batching whatever is queued into one
// writev, and gives back each reply's semaphore token. After a failed
// write it closes the connection (which ends the reader) and keeps
// draining until the channel closes.
func (s *session) writer(done chan<- struct{}) {
	defer close(done)
	var (
		batch []*reply
		iov   net.Buffers
	)
	for rep := range s.replies {
		batch = batch[:0]
		if rep != nil {
			batch = append(batch, rep)
		}
	more:
		for len(batch) < 256 {
			select {
			case rep, ok := <-s.replies:
				if !ok {
					break more
				}
				if rep != nil {
					batch = append(batch, rep)
				}
			default:
				break more
			}
		}
		s.wmu.Lock()
		if s.pending != nil {
			// Its first bytes are on the socket: its rest goes first.
			batch = append(batch, nil)
			copy(batch[1:], batch)
			batch[0], s.pending = s.pending, nil
		}
		if len(batch) > 0 && !s.wfailed {
			iov = iov[:0]
			for _, rep := range batch {
				iov = rep.appendTo(iov)
			}
			out := skip(iov, batch[0].skip)
			if _, err := out.WriteTo(s.c.nc); err != nil {
				s.wfailed = true
				if !s.c.isStopping() {
					s.c.log.Debug("nbd: connection write", "export", s.name, "err", err)
				}
				s.cancel()
				s.c.nc.Close()
			}
			clear(iov)
		}
		s.wmu.Unlock()
		for _, rep := range batch {
			s.sent(rep)
		}
		clear(batch)
	}
}

// skip drops the first n bytes of iov.
func skip(iov net.Buffers, n int) net.Buffers {
	for n > 0 && len(iov) > 0 {
		k := min(n, len(iov[0]))
		iov[0] = iov[0][k:]
		n -= k
		if len(iov[0]) == 0 {
			iov = iov[1:]
		}
	}
	return iov
}

// reply is one reply, simple or made of structured chunks, ready to send:
// header bytes interleaved with payload slices.
type reply struct {
	hdr   []byte // every header byte, in order
	parts []part
	buf   Buffer // payload memory, released once sent
	cost  int64  // the request's payload budget, given back once sent
	skip  int    // bytes already sent directly (session.direct)
}

// part: the header bytes from the previous part's end up to end, then
// data.
type part struct {
	end  int
	data []byte
}

var replyPool = sync.Pool{New: func() any { return new(reply) }}

func newReply() *reply { return replyPool.Get().(*reply) }

func (r *reply) release() {
	if r.buf != nil {
		r.buf.Release()
		r.buf = nil
	}
	r.hdr = r.hdr[:0]
	r.cost, r.skip = 0, 0
	clear(r.parts)
	r.parts = r.parts[:0]
	replyPool.Put(r)
}

func (r *reply) simple(code uint32, cookie uint64) {
	r.hdr = binary.BigEndian.AppendUint32(r.hdr, simpleMagic)
	r.hdr = binary.BigEndian.AppendUint32(r.hdr, code)
	r.hdr = binary.BigEndian.AppendUint64(r.hdr, cookie)
}

// chunk appends a structured chunk header; the caller appends the fixed
// payload fields to hdr and any data with r.data.
func (r *reply) chunk(flags, typ uint16, cookie uint64, length uint32) {
	r.hdr = binary.BigEndian.AppendUint32(r.hdr, structuredMagic)
	r.hdr = binary.BigEndian.AppendUint16(r.hdr, flags)
	r.hdr = binary.BigEndian.AppendUint16(r.hdr, typ)
	r.hdr = binary.BigEndian.AppendUint64(r.hdr, cookie)
	r.hdr = binary.BigEndian.AppendUint32(r.hdr, length)
}

// data appends payload bytes after the header bytes appended so far.
func (r *reply) data(p []byte) {
	r.parts = append(r.parts, part{end: len(r.hdr), data: p})
}

func (r *reply) appendTo(iov net.Buffers) net.Buffers {
	start := 0
	for _, p := range r.parts {
		if p.end > start {
			iov = append(iov, r.hdr[start:p.end])
		}
		iov = append(iov, p.data)
		start = p.end
	}
	if len(r.hdr) > start {
		iov = append(iov, r.hdr[start:])
	}
	return iov
}

// maxInFlightBytes bounds the READ and WRITE payload bytes one connection
// holds at once (requests being served or replies waiting to be sent), so
// that MaxInFlight requests of the maximum payload cannot pin gigabytes.
// A request bigger than the budget still runs, alone. (A variable for
// tests.)
var maxInFlightBytes int64 = 128 << 20

// budget is a weighted semaphore of payload bytes. Only the connection's
// reader acquires; the writer releases.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond
	used int64
	max  int64
}

func (b *budget) init(max int64) {
	b.max = max
	b.cond.L = &b.mu
}

func (b *budget) acquire(n int64) {
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.max {
		b.cond.Wait()
	}
	b.used += n
	b.mu.Unlock()
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Signal()
}
