package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// conn is one client connection: the handshake, then a session.
type conn struct {
	s   *Server
	raw net.Conn // as accepted
	nc  net.Conn // raw, or a *tls.Conn over it after NBD_OPT_STARTTLS
	br  *bufio.Reader
	log *slog.Logger

	tls   *TLS // the listener's policy; nil: no TLS
	tlsOn bool // NBD_OPT_STARTTLS succeeded

	mu       sync.Mutex // guards stopping and the read deadline
	stopping bool
}

// handshake state (option haggling).
type haggle struct {
	noZeroes   bool
	structured bool
	metaName   string // export named by the last NBD_OPT_SET_META_CONTEXT
	metaAlloc  bool   // it selected base:allocation
	out        []byte // replies to the current option, written at once
}

var (
	errAbort    = errors.New("nbd: client aborted the handshake")
	errProtocol = fmt.Errorf("nbd: protocol violation: %w", errs.ErrInvalid)
	errTLS      = errors.New("nbd: TLS")
)

func (s *Server) newConn(nc net.Conn, t *TLS) *conn {
	return &conn{
		s:   s,
		raw: nc,
		nc:  nc,
		br:  bufio.NewReaderSize(nc, 64<<10),
		log: s.log.With("remote", remoteName(nc)),
		tls: t,
	}
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return nc.LocalAddr().Network()
}

// shutdown makes the connection stop reading: a handshake in progress
// fails, a session stops taking requests and drains. Safe to call from any
// goroutine, more than once.
func (c *conn) shutdown() {
	c.mu.Lock()
	c.stopping = true
	c.nc.SetReadDeadline(time.Now())
	c.mu.Unlock()
}

// enterTransmission clears the handshake deadline unless the server is
// stopping.
func (c *conn) enterTransmission() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	c.nc.SetDeadline(time.Time{})
	return true
}

func (c *conn) serve(ctx context.Context) {
	// The accepted connection, not a TLS one over it: closing never waits
	// for a peer that does not read.
	defer c.raw.Close()
	c.log.Debug("nbd: client connected")
	// The whole handshake has one deadline: reads and writes of the
	// connection, the TLS handshake and the export's opening.
	deadline := time.Now().Add(c.s.opts.HandshakeTimeout)
	c.mu.Lock()
	if !c.stopping {
		c.nc.SetDeadline(deadline)
	}
	c.mu.Unlock()
	hctx, cancel := context.WithDeadline(ctx, deadline)
	sess, err := c.handshake(hctx)
	cancel()
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errAbort) || errors.Is(err, io.EOF):
		case errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded):
			if !c.isStopping() {
				c.log.Info("nbd: handshake not finished in time: disconnected", "timeout", c.s.opts.HandshakeTimeout, "err", err)
			}
		case errors.Is(err, errTLS):
			c.log.Warn("nbd: disconnected", "err", err)
		default:
			c.log.Debug("nbd: handshake ended", "err", err)
		}
		return
	}
	if !c.enterTransmission() {
		sess.exp.Close()
		return
	}
	c.log.Debug("nbd: transmission", "export", sess.name, "structured", sess.structured)
	sess.run(ctx)
	c.log.Debug("nbd: client gone", "export", sess.name)
}

// handshake runs the fixed newstyle handshake and option haggling, and
// returns the session the client chose with NBD_OPT_GO or
// NBD_OPT_EXPORT_NAME.
func (c *conn) handshake(ctx context.Context) (*session, error) {
	var h haggle
	out := binary.BigEndian.AppendUint64(nil, nbdMagic)
	out = binary.BigEndian.AppendUint64(out, optMagic)
	out = binary.BigEndian.AppendUint16(out, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(out); err != nil {
		return nil, err
	}
	var b [16]byte
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return nil, err
	}
	cf := binary.BigEndian.Uint32(b[:4])
	if cf&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return nil, fmt.Errorf("%w: unknown client flags %#x", errProtocol, cf)
	}
	h.noZeroes = cf&clientNoZeroes != 0

	for {
		if _, err := io.ReadFull(c.br, b[:16]); err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint64(b[:8]) != optMagic {
			return nil, fmt.Errorf("%w: bad option magic %#x", errProtocol, binary.BigEndian.Uint64(b[:8]))
		}
		opt := binary.BigEndian.Uint32(b[8:12])
		n := binary.BigEndian.Uint32(b[12:16])
		h.out = h.out[:0]
		if n > maxOptionLen {
			if _, err := io.CopyN(io.Discard, c.br, int64(n)); err != nil {
				return nil, err
			}
			h.reply(opt, repErrTooBig, []byte("option data too long"))
		} else {
			data := make([]byte, n)
			if _, err := io.ReadFull(c.br, data); err != nil {
				return nil, err
			}
			sess, err := c.option(ctx, &h, opt, data)
			if err == nil && sess == nil && len(h.out) == 0 {
				continue // NBD_OPT_STARTTLS answered and done
			}
			if err != nil || sess != nil {
				if len(h.out) > 0 {
					if _, werr := c.nc.Write(h.out); werr != nil && err == nil {
						sess.exp.Close()
						return nil, werr
					}
				}
				return sess, err
			}
		}
		if _, err := c.nc.Write(h.out); err != nil {
			return nil, err
		}
	}
}

// option answers one option into h.out. It returns a session when the
// option ends the handshake successfully, an error when the connection
// must close.
func (c *conn) option(ctx context.Context, h *haggle, opt uint32, data []byte) (*session, error) {
	if c.tls != nil && c.tls.Require && !c.tlsOn && opt != optStartTLS && opt != optAbort {
		if opt == optExportName {
			// No error can be sent: the protocol says to drop the client.
			return nil, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS on a listener that requires TLS", errTLS)
		}
		h.reply(opt, repErrTLSReqd, []byte("TLS required: send NBD_OPT_STARTTLS first"))
		return nil, nil
	}
	switch opt {
	case optStartTLS:
		return nil, c.startTLS(ctx, h, data)

	case optExportName:
		name := string(data)
		exp, err := c.s.backend.Open(ctx, name)
		if err != nil {
			// No way to report an error after NBD_OPT_EXPORT_NAME.
			return nil, fmt.Errorf("nbd: export %q: %w", name, err)
		}
		sess := c.newSession(h, name, exp)
		h.out = binary.BigEndian.AppendUint64(h.out, sess.size)
		h.out = binary.BigEndian.AppendUint16(h.out, sess.flags)
		if !h.noZeroes {
			h.out = append(h.out, make([]byte, 124)...)
		}
		return sess, nil

	case optAbort:
		h.reply(opt, repAck, nil)
		return nil, errAbort

	case optList:
		if len(data) != 0 {
			h.reply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
			return nil, nil
		}
		names, err := c.s.backend.List(ctx)
		if err != nil {
			h.replyErr(opt, err)
			return nil, nil
		}
		for _, name := range names {
			p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
			h.reply(opt, repServer, append(p, name...))
		}
		h.reply(opt, repAck, nil)
		return nil, nil

	case optInfo, optGo:
		return c.infoGo(ctx, h, opt, data)

	case optStructuredReply:
		if len(data) != 0 {
			h.reply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
			return nil, nil
		}
		h.structured = true
		h.reply(opt, repAck, nil)
		return nil, nil

	case optListMetaContext, optSetMetaContext:
		name, queries, ok := parseMeta(data)
		if !ok {
			h.reply(opt, repErrInvalid, []byte("malformed meta context request"))
			if opt == optSetMetaContext {
				h.metaName, h.metaAlloc = "", false
			}
			return nil, nil
		}
		if opt == optSetMetaContext {
			h.metaName, h.metaAlloc = "", false
			if !h.structured {
				h.reply(opt, repErrInvalid, []byte("negotiate structured replies first"))
				return nil, nil
			}
			h.metaName = name
			for _, q := range queries {
				if q == metaBaseAllocation {
					h.metaAlloc = true
				}
			}
			if h.metaAlloc {
				p := binary.BigEndian.AppendUint32(nil, metaIDAllocation)
				h.reply(opt, repMetaContext, append(p, metaBaseAllocation...))
			}
			h.reply(opt, repAck, nil)
			return nil, nil
		}
		match := len(queries) == 0
		for _, q := range queries {
			if q == "base:" || q == metaBaseAllocation {
				match = true
			}
		}
		if match {
			p := binary.BigEndian.AppendUint32(nil, 0)
			h.reply(opt, repMetaContext, append(p, metaBaseAllocation...))
		}
		h.reply(opt, repAck, nil)
		return nil, nil

	default:
		h.reply(opt, repErrUnsup, fmt.Appendf(nil, "option %d not supported", opt))
		return nil, nil
	}
}

// startTLS answers NBD_OPT_STARTTLS: NBD_REP_ACK, sent at once, then the
// TLS handshake, after which everything goes over TLS. The options
// negotiated before are forgotten, as the protocol says (structured
// replies and meta contexts are negotiated again over TLS). It returns an
// error when the connection must close; h.out is empty when it succeeded.
func (c *conn) startTLS(ctx context.Context, h *haggle, data []byte) error {
	switch {
	case c.tls == nil:
		h.reply(optStartTLS, repErrUnsup, []byte("TLS is not configured on this listener"))
		return nil
	case c.tlsOn:
		h.reply(optStartTLS, repErrInvalid, []byte("TLS is already on"))
		return nil
	case len(data) != 0:
		h.reply(optStartTLS, repErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
		return nil
	case c.br.Buffered() > 0:
		// Bytes sent before our answer would be taken as if they came
		// over TLS: a plain-text injection. The client must wait.
		return fmt.Errorf("%w: %d bytes sent after NBD_OPT_STARTTLS before its answer", errTLS, c.br.Buffered())
	}
	h.reply(optStartTLS, repAck, nil)
	if _, err := c.nc.Write(h.out); err != nil {
		return err
	}
	h.out = h.out[:0]
	tc := tls.Server(c.raw, c.tls.Config)
	if err := tc.HandshakeContext(ctx); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w handshake: %w", errTLS, err)
	}
	c.mu.Lock()
	c.nc = tc
	c.mu.Unlock()
	c.br.Reset(tc)
	c.tlsOn = true
	*h = haggle{noZeroes: h.noZeroes, out: h.out}
	cs := tc.ConnectionState()
	subject := ""
	if len(cs.PeerCertificates) > 0 {
		subject = cs.PeerCertificates[0].Subject.String()
	}
	c.log = c.log.With("tls", tls.VersionName(cs.Version), "client_cert", subject)
	c.log.Debug("nbd: TLS on")
	return nil
}

// infoGo answers NBD_OPT_INFO and NBD_OPT_GO.
func (c *conn) infoGo(ctx context.Context, h *haggle, opt uint32, data []byte) (*session, error) {
	if len(data) < 6 {
		h.reply(opt, repErrInvalid, []byte("option data too short"))
		return nil, nil
	}
	nl := binary.BigEndian.Uint32(data)
	if uint64(nl) > uint64(len(data))-6 {
		h.reply(opt, repErrInvalid, []byte("export name length beyond the option data"))
		return nil, nil
	}
	name := string(data[4 : 4+nl])
	rest := data[4+nl:]
	nreq := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		h.reply(opt, repErrInvalid, []byte("information request list does not match its count"))
		return nil, nil
	}
	var wantName, wantDesc bool
	for i := range nreq {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}

	exp, err := c.s.backend.Open(ctx, name)
	if err != nil {
		h.replyErr(opt, fmt.Errorf("export %q: %w", name, err))
		return nil, nil
	}
	sess := c.newSession(h, name, exp)

	p := binary.BigEndian.AppendUint16(nil, infoExport)
	p = binary.BigEndian.AppendUint64(p, sess.size)
	p = binary.BigEndian.AppendUint16(p, sess.flags)
	h.reply(opt, repInfo, p)
	p = binary.BigEndian.AppendUint16(nil, infoBlockSize)
	p = binary.BigEndian.AppendUint32(p, sess.minBlock)
	p = binary.BigEndian.AppendUint32(p, sess.prefBlock)
	p = binary.BigEndian.AppendUint32(p, sess.maxPayload)
	h.reply(opt, repInfo, p)
	if wantName {
		p = binary.BigEndian.AppendUint16(nil, infoName)
		h.reply(opt, repInfo, append(p, name...))
	}
	if d, ok := exp.(Describer); ok && wantDesc {
		if desc := d.Description(); desc != "" {
			if len(desc) > maxString {
				desc = desc[:maxString]
			}
			p = binary.BigEndian.AppendUint16(nil, infoDescription)
			h.reply(opt, repInfo, append(p, desc...))
		}
	}
	h.reply(opt, repAck, nil)
	if opt == optInfo {
		exp.Close()
		return nil, nil
	}
	return sess, nil
}

// parseMeta parses the data of NBD_OPT_{LIST,SET}_META_CONTEXT.
func parseMeta(data []byte) (name string, queries []string, ok bool) {
	str := func() (string, bool) {
		if len(data) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(data)
		if uint64(n) > uint64(len(data))-4 {
			return "", false
		}
		s := string(data[4 : 4+n])
		data = data[4+n:]
		return s, true
	}
	if name, ok = str(); !ok || len(data) < 4 {
		return "", nil, false
	}
	nq := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(nq) > uint64(len(data))/4 {
		return "", nil, false
	}
	for range nq {
		q, ok := str()
		if !ok {
			return "", nil, false
		}
		queries = append(queries, q)
	}
	return name, queries, len(data) == 0
}

// reply appends an option reply to h.out.
func (h *haggle) reply(opt, typ uint32, data []byte) {
	h.out = binary.BigEndian.AppendUint64(h.out, repMagic)
	h.out = binary.BigEndian.AppendUint32(h.out, opt)
	h.out = binary.BigEndian.AppendUint32(h.out, typ)
	h.out = binary.BigEndian.AppendUint32(h.out, uint32(len(data)))
	h.out = append(h.out, data...)
}

// replyErr appends the error reply for a backend error.
func (h *haggle) replyErr(opt uint32, err error) {
	msg := err.Error()
	if len(msg) > maxString {
		msg = msg[:maxString]
	}
	h.reply(opt, repErr(err), []byte(msg))
}

// blockSizes returns the export's constraints, made valid and capped by
// the server's maximum payload.
func blockSizes(exp Export, maxPayload uint32) (minB, pref, maxB uint32) {
	minB, pref, maxB = 1, 4096, maxPayload
	bs, ok := exp.(BlockSizer)
	if !ok {
		return
	}
	m, p, x := bs.BlockSize()
	pow2 := func(v uint32) bool { return v != 0 && bits.OnesCount32(v) == 1 }
	if pow2(m) && m <= 64<<10 {
		minB = m
	}
	pref = max(pref, minB)
	if pow2(p) && p >= max(minB, 512) && p <= maxB {
		pref = p
	}
	if x != 0 && x < maxB {
		maxB = x
	}
	maxB = max(maxB, pref)
	maxB -= maxB % minB
	return
}
