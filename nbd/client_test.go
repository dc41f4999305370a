package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A tiny hand-written NBD client for the protocol tests: it speaks the
// wire format directly, so tests can send what real clients never would.

// testServer serves b on a Unix socket for the test's lifetime.
type testServer struct {
	srv    *Server
	sock   string
	cancel context.CancelFunc
	done   chan error
}

func startServer(t testing.TB, b Backend, o Options) *testServer {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: NewServer(b, o), sock: sock, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- ts.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return ts
}

type client struct {
	t          testing.TB
	nc         net.Conn
	br         *bufio.Reader
	structured bool
	size       uint64
	flags      uint16
	reads      map[uint64]uint32 // cookie -> length of reads in flight
	readOff    map[uint64]uint64 // cookie -> offset of reads in flight
	early      map[uint64]*result
	cookie     uint64
}

// dial connects and completes the greeting with the given client flags.
func dial(t testing.TB, sock string, clientFlags uint32) *client {
	t.Helper()
	network := "unix"
	if a, ok := strings.CutPrefix(sock, "tcp:"); ok {
		network, sock = "tcp", a
	}
	nc, err := net.Dial(network, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc), reads: map[uint64]uint32{}, readOff: map[uint64]uint64{}, early: map[uint64]*result{}}
	var b [18]byte
	c.full(b[:])
	if binary.BigEndian.Uint64(b[0:]) != nbdMagic || binary.BigEndian.Uint64(b[8:]) != optMagic {
		t.Fatalf("bad greeting % x", b)
	}
	if hf := binary.BigEndian.Uint16(b[16:]); hf != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", hf)
	}
	c.write(binary.BigEndian.AppendUint32(nil, clientFlags))
	return c
}

func (c *client) full(p []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.br, p); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *client) write(p []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// closed reports whether the server closed the connection (EOF on read).
func (c *client) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func (c *client) opt(opt uint32, data []byte) {
	c.t.Helper()
	p := binary.BigEndian.AppendUint64(nil, optMagic)
	p = binary.BigEndian.AppendUint32(p, opt)
	p = binary.BigEndian.AppendUint32(p, uint32(len(data)))
	c.write(append(p, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *client) optReply() optReply {
	c.t.Helper()
	var b [20]byte
	c.full(b[:])
	if m := binary.BigEndian.Uint64(b[:]); m != repMagic {
		c.t.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(b[8:]), typ: binary.BigEndian.Uint32(b[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(b[16:]))
	c.full(r.data)
	return r
}

// optReplies reads replies to one option up to the final one (ACK or an
// error).
func (c *client) optReplies() []optReply {
	c.t.Helper()
	var rs []optReply
	for {
		r := c.optReply()
		rs = append(rs, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return rs
		}
	}
}

func infoData(name string, reqs ...uint16) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	p = append(p, name...)
	p = binary.BigEndian.AppendUint16(p, uint16(len(reqs)))
	for _, r := range reqs {
		p = binary.BigEndian.AppendUint16(p, r)
	}
	return p
}

func metaData(name string, queries ...string) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	p = append(p, name...)
	p = binary.BigEndian.AppendUint32(p, uint32(len(queries)))
	for _, q := range queries {
		p = binary.BigEndian.AppendUint32(p, uint32(len(q)))
		p = append(p, q...)
	}
	return p
}

// connect dials and enters transmission on export name with NBD_OPT_GO,
// optionally negotiating structured replies and base:allocation.
func connect(t testing.TB, sock, name string, structured, meta bool) *client {
	t.Helper()
	c := dial(t, sock, clientFixedNewstyle|clientNoZeroes)
	if structured {
		c.opt(optStructuredReply, nil)
		if r := c.optReply(); r.typ != repAck {
			t.Fatalf("structured reply: %#x", r.typ)
		}
		c.structured = true
	}
	if meta {
		c.opt(optSetMetaContext, metaData(name, metaBaseAllocation))
		rs := c.optReplies()
		if len(rs) != 2 || rs[0].typ != repMetaContext {
			t.Fatalf("set meta context: %+v", rs)
		}
	}
	c.opt(optGo, infoData(name, infoBlockSize))
	for _, r := range c.optReplies() {
		switch {
		case r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport:
			c.size = binary.BigEndian.Uint64(r.data[2:])
			c.flags = binary.BigEndian.Uint16(r.data[10:])
		case r.typ&(1<<31) != 0:
			t.Fatalf("NBD_OPT_GO %q: error %#x %s", name, r.typ, r.data[6:])
		}
	}
	return c
}

// send sends a request and returns its cookie.
func (c *client) send(typ, flags uint16, off uint64, length uint32, payload []byte) uint64 {
	c.t.Helper()
	c.cookie++
	p := binary.BigEndian.AppendUint32(nil, requestMagic)
	p = binary.BigEndian.AppendUint16(p, flags)
	p = binary.BigEndian.AppendUint16(p, typ)
	p = binary.BigEndian.AppendUint64(p, c.cookie)
	p = binary.BigEndian.AppendUint64(p, off)
	p = binary.BigEndian.AppendUint32(p, length)
	c.write(append(p, payload...))
	if typ == cmdRead {
		c.reads[c.cookie] = length
		c.readOff[c.cookie] = off
	}
	return c.cookie
}

type chunk struct {
	typ   uint16
	off   uint64
	n     uint64
	flags uint16
}

// result is a whole reply to one request.
type result struct {
	cookie  uint64
	err     uint32
	msg     string
	data    []byte // READ: assembled data
	chunks  []chunk
	extents [][2]uint32 // BLOCK_STATUS descriptors
	simple  bool
}

// recv reads one whole reply (any cookie), assembling structured chunks.
func (c *client) recv() *result {
	c.t.Helper()
	partial := map[uint64]*result{}
	for {
		var m [4]byte
		c.full(m[:])
		switch binary.BigEndian.Uint32(m[:]) {
		case simpleMagic:
			var b [12]byte
			c.full(b[:])
			r := &result{err: binary.BigEndian.Uint32(b[:]), cookie: binary.BigEndian.Uint64(b[4:]), simple: true}
			if n, ok := c.reads[r.cookie]; ok && r.err == 0 {
				r.data = make([]byte, n)
				c.full(r.data)
			}
			delete(c.reads, r.cookie)
			return r
		case structuredMagic:
			var b [16]byte
			c.full(b[:])
			flags := binary.BigEndian.Uint16(b[:])
			typ := binary.BigEndian.Uint16(b[2:])
			cookie := binary.BigEndian.Uint64(b[4:])
			payload := make([]byte, binary.BigEndian.Uint32(b[12:]))
			c.full(payload)
			r := partial[cookie]
			if r == nil {
				r = &result{cookie: cookie}
				if n, ok := c.reads[cookie]; ok {
					r.data = make([]byte, n)
				}
				partial[cookie] = r
			}
			ch := chunk{typ: typ, flags: flags}
			switch typ {
			case replyOffsetData:
				ch.off = binary.BigEndian.Uint64(payload)
				ch.n = uint64(len(payload) - 8)
				c.place(cookie, r, ch.off, payload[8:])
			case replyOffsetHole:
				ch.off = binary.BigEndian.Uint64(payload)
				ch.n = uint64(binary.BigEndian.Uint32(payload[8:]))
				c.place(cookie, r, ch.off, make([]byte, ch.n))
			case replyBlockStatus:
				if id := binary.BigEndian.Uint32(payload); id != metaIDAllocation {
					c.t.Fatalf("block status context id %d", id)
				}
				for p := payload[4:]; len(p) >= 8; p = p[8:] {
					r.extents = append(r.extents, [2]uint32{binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])})
				}
			case replyError:
				r.err = binary.BigEndian.Uint32(payload)
				ml := binary.BigEndian.Uint16(payload[4:])
				r.msg = string(payload[6 : 6+ml])
			case replyNone:
			default:
				c.t.Fatalf("unexpected chunk type %d", typ)
			}
			r.chunks = append(r.chunks, ch)
			if flags&replyFlagDone != 0 {
				delete(partial, cookie)
				delete(c.reads, cookie)
				return r
			}
		default:
			c.t.Fatalf("bad reply magic % x", m)
		}
	}
}

// place copies read data into the result at its offset.
func (c *client) place(cookie uint64, r *result, off uint64, p []byte) {
	c.t.Helper()
	// The request's offset is not in the chunk; tests read from offsets
	// they know, so reads remember them.
	base, ok := c.readOff[cookie]
	if !ok || off < base || off-base+uint64(len(p)) > uint64(len(r.data)) {
		c.t.Fatalf("chunk %d+%d outside the read", off, len(p))
	}
	copy(r.data[off-base:], p)
}

// wait returns the reply to cookie, keeping replies to others for later.
func (c *client) wait(cookie uint64) *result {
	c.t.Helper()
	if r, ok := c.early[cookie]; ok {
		delete(c.early, cookie)
		return r
	}
	for {
		r := c.recv()
		if r.cookie == cookie {
			return r
		}
		c.early[r.cookie] = r
	}
}

// do sends a request and waits for its reply.
func (c *client) do(typ, flags uint16, off uint64, length uint32, payload []byte) *result {
	c.t.Helper()
	return c.wait(c.send(typ, flags, off, length, payload))
}

func (c *client) pread(off uint64, n uint32) []byte {
	c.t.Helper()
	r := c.do(cmdRead, 0, off, n, nil)
	if r.err != 0 {
		c.t.Fatalf("read %d+%d: error %d %s", off, n, r.err, r.msg)
	}
	return r.data
}

func (c *client) pwrite(off uint64, p []byte) {
	c.t.Helper()
	if r := c.do(cmdWrite, 0, off, uint32(len(p)), p); r.err != 0 {
		c.t.Fatalf("write %d+%d: error %d %s", off, len(p), r.err, r.msg)
	}
}

func (c *client) disc() {
	c.send(cmdDisc, 0, 0, 0, nil)
}

func (r *result) String() string {
	return fmt.Sprintf("cookie %d err %d %q chunks %v extents %v", r.cookie, r.err, r.msg, r.chunks, r.extents)
}
