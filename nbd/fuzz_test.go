package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testpki"
)

// scriptConn is a connection whose client side is a fixed script: reads
// return the script, then EOF; writes are kept.
type scriptConn struct {
	in *bytes.Reader

	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return c.in.Read(p)
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *scriptConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *scriptConn) LocalAddr() net.Addr                { return &net.UnixAddr{Net: "unix", Name: "fuzz"} }
func (c *scriptConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Net: "unix", Name: "client"} }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }

const fuzzExportSize = 1 << 20

// fuzzServe runs one connection of a server over a small in-memory
// export ("vol", and "ro" read-only with 512-byte blocks) with script as
// the client's bytes, to the end, and returns what the server wrote.
func fuzzServe(t *testing.T, script []byte, tp *TLS) []byte {
	m := NewMemBackend()
	m.Add("vol", fuzzExportSize, MemOptions{})
	m.Add("ro", fuzzExportSize, MemOptions{ReadOnly: true, MinBlock: 512})
	srv := NewServer(m, Options{MaxPayload: 64 << 10, MaxInFlight: 8, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	sc := &scriptConn{in: bytes.NewReader(script)}
	c := srv.newConn(sc, tp)
	done := make(chan struct{})
	go func() { c.serve(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the connection did not end at the end of the client's bytes")
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return bytes.Clone(sc.out.Bytes())
}

// greeting checks the server's first 18 bytes and returns the rest.
func greeting(t *testing.T, out []byte) []byte {
	t.Helper()
	if len(out) < 18 || binary.BigEndian.Uint64(out) != nbdMagic || binary.BigEndian.Uint64(out[8:]) != optMagic ||
		binary.BigEndian.Uint16(out[16:]) != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("greeting % x", out[:min(len(out), 18)])
	}
	return out[18:]
}

var knownReplies = map[uint32]bool{
	repAck: true, repServer: true, repInfo: true, repMetaContext: true, repErrUnsup: true, repErrPolicy: true,
	repErrInvalid: true, repErrTLSReqd: true, repErrUnknown: true, repErrShutdown: true, repErrTooBig: true,
}

// FuzzHandshake feeds arbitrary client bytes to a connection (with or
// without TLS required, by the first byte) and checks that it ends
// without a panic, that the server greets correctly, and that every
// option reply it writes is well formed, of a known type, answers an
// option the client sent, and comes in the client's order; with TLS
// required, nothing but NBD_REP_ERR_TLS_REQD, STARTTLS's and ABORT's
// answers is ever written in plain text.
func FuzzHandshake(f *testing.F) {
	opt := func(b []byte, o uint32, data []byte) []byte {
		b = binary.BigEndian.AppendUint64(b, optMagic)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	flags := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	f.Add(append([]byte{0}, opt(bytes.Clone(flags), optList, nil)...))
	f.Add(append([]byte{0}, opt(opt(opt(bytes.Clone(flags), optStructuredReply, nil), optSetMetaContext, metaData("vol", metaBaseAllocation)), optGo, infoData("vol", infoBlockSize, infoName, infoDescription))...))
	f.Add(append([]byte{0}, opt(opt(bytes.Clone(flags), optInfo, infoData("nope")), optExportName, []byte("ro"))...))
	f.Add(append([]byte{0}, opt(opt(bytes.Clone(flags), optListMetaContext, metaData("vol")), optAbort, nil)...))
	f.Add(append([]byte{1}, opt(opt(opt(bytes.Clone(flags), optList, nil), optStartTLS, nil), optGo, nil)...))
	f.Add(append([]byte{1}, opt(bytes.Clone(flags), optExportName, []byte("vol"))...))
	f.Add([]byte{0, 0, 0, 0, 3, 0x49, 0x48})

	tp := &TLS{Config: newPKIForFuzz(f), Require: true}
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) == 0 {
			return
		}
		var policy *TLS
		if script[0]&1 != 0 {
			policy = tp
		}
		out := greeting(t, fuzzServe(t, script[1:], policy))
		// The options the client sent, in order, as far as they can be
		// read (the server reads the same way).
		var sent []uint32
		in := script[1:]
		if len(in) >= 4 {
			in = in[4:]
			for len(in) >= 16 && binary.BigEndian.Uint64(in) == optMagic {
				o, n := binary.BigEndian.Uint32(in[8:]), binary.BigEndian.Uint32(in[12:])
				sent = append(sent, o)
				if uint64(n) > uint64(len(in)-16) || (o == optStartTLS && policy != nil) || o == optExportName {
					// The rest is TLS, the end, or transmission. (Without
					// TLS configured, STARTTLS is refused and more
					// options follow in plain text.)
					break
				}
				in = in[16+n:]
			}
		}
		next := 0 // index in sent of the option being answered
		for len(out) >= 20 && binary.BigEndian.Uint64(out) == repMagic {
			o, typ, n := binary.BigEndian.Uint32(out[8:]), binary.BigEndian.Uint32(out[12:]), binary.BigEndian.Uint32(out[16:])
			if uint64(n) > uint64(len(out)-20) {
				t.Fatalf("option reply of %d bytes, %d written", n, len(out)-20)
			}
			if !knownReplies[typ] {
				t.Fatalf("option reply type %#x", typ)
			}
			for next < len(sent) && sent[next] != o {
				next++ // earlier options whose final reply came already
			}
			if next == len(sent) {
				t.Fatalf("reply to option %d, not sent (or out of order): sent %v", o, sent)
			}
			if policy != nil && o != optStartTLS && o != optAbort && typ != repErrTLSReqd {
				t.Fatalf("TLS required: option %d answered %#x in plain text", o, typ)
			}
			out = out[20+n:]
			if typ == repAck || typ&(1<<31) != 0 {
				next++
			}
		}
	})
}

// newPKIForFuzz is a server TLS configuration for the fuzz targets.
func newPKIForFuzz(f *testing.F) *tls.Config {
	ca := testpki.NewCA(f, "fuzz CA")
	cfg, err := LoadTLSDir(ca.ServerDir(f), true)
	if err != nil {
		f.Fatal(err)
	}
	return cfg
}

// FuzzRequests feeds arbitrary transmission-phase bytes to a session
// that negotiated structured replies and base:allocation on "vol" (or,
// by the first byte, simple replies on the read-only "ro"), and checks,
// reading the requests as the protocol defines them: no panic; every
// reply is well formed and answers a request that was sent, once; a read
// that succeeds returns exactly its range; a request the protocol
// forbids (beyond the end, unaligned, a write to a read-only export) is
// refused; and when the stream ends cleanly every request is answered.
func FuzzRequests(f *testing.F) {
	req := func(b []byte, typ, flags uint16, cookie, off uint64, n uint32, data []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, requestMagic)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, cookie)
		b = binary.BigEndian.AppendUint64(b, off)
		b = binary.BigEndian.AppendUint32(b, n)
		return append(b, data...)
	}
	w := req(nil, cmdWrite, cmdFlagFUA, 1, 4096, 8, []byte("abcdefgh"))
	w = req(w, cmdRead, 0, 2, 4090, 20, nil)
	w = req(w, cmdBlockStatus, 0, 3, 0, fuzzExportSize, nil)
	w = req(w, cmdTrim, 0, 4, 0, 4096, nil)
	w = req(w, cmdWriteZeroes, cmdFlagNoHole, 5, 8192, 100, nil)
	w = req(w, cmdFlush, 0, 6, 0, 0, nil)
	w = req(w, cmdRead, cmdFlagDF, 7, 0, 10000, nil)
	w = req(w, cmdDisc, 0, 8, 0, 0, nil)
	f.Add(append([]byte{0}, w...))
	f.Add(append([]byte{1}, req(req(nil, cmdRead, 0, 1, 512, 512, nil), cmdWrite, 0, 2, 0, 512, make([]byte, 512))...))
	f.Add(append([]byte{0}, req(req(nil, cmdRead, 0, 1, fuzzExportSize-1, 2, nil), cmdCache, 0, 2, 0, 1, nil)...))
	f.Add(append([]byte{0}, req(nil, cmdWrite, 0, 9, 0, 1<<20, nil)...))
	f.Add([]byte{0, 0x25, 0x60, 0x95, 0x13, 0, 0})

	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) == 0 {
			return
		}
		structured := script[0]&1 == 0
		export := "vol"
		if !structured {
			export = "ro"
		}
		var hs []byte
		hs = binary.BigEndian.AppendUint32(hs, clientFixedNewstyle|clientNoZeroes)
		addOpt := func(o uint32, data []byte) {
			hs = binary.BigEndian.AppendUint64(hs, optMagic)
			hs = binary.BigEndian.AppendUint32(hs, o)
			hs = binary.BigEndian.AppendUint32(hs, uint32(len(data)))
			hs = append(hs, data...)
		}
		if structured {
			addOpt(optStructuredReply, nil)
			addOpt(optSetMetaContext, metaData(export, metaBaseAllocation))
		}
		addOpt(optGo, infoData(export, infoBlockSize))
		// Cookies must be distinct to tell replies apart (the protocol
		// asks clients for that): the stream is cut before the first
		// request that reuses one.
		in, seen := script[1:], map[uint64]bool{}
		for len(in) >= requestSize && binary.BigEndian.Uint32(in) == requestMagic {
			if c := binary.BigEndian.Uint64(in[8:]); seen[c] {
				script = script[:len(script)-len(in)]
				break
			} else {
				seen[c] = true
			}
			n := requestSize
			if binary.BigEndian.Uint16(in[6:]) == cmdWrite {
				n += int(min(uint64(binary.BigEndian.Uint32(in[24:])), uint64(len(in))))
			}
			in = in[min(n, len(in)):]
		}
		out := greeting(t, fuzzServe(t, append(hs, script[1:]...), nil))
		// Skip the handshake's replies up to NBD_OPT_GO's ACK.
		for {
			if len(out) < 20 || binary.BigEndian.Uint64(out) != repMagic {
				t.Fatalf("handshake replies cut short")
			}
			o, typ, n := binary.BigEndian.Uint32(out[8:]), binary.BigEndian.Uint32(out[12:]), binary.BigEndian.Uint32(out[16:])
			out = out[20+n:]
			if typ&(1<<31) != 0 {
				t.Fatalf("option %d refused: %#x", o, typ)
			}
			if o == optGo && typ == repAck {
				break
			}
		}

		// The requests, read as the server must read them.
		type request struct {
			typ, flags uint16
			off        uint64
			length     uint32
		}
		pending := map[uint64][]request{} // by cookie
		in = script[1:]
		clean := false // the stream ended with NBD_CMD_DISC or at a request's end
		for {
			if len(in) == 0 {
				clean = true
				break
			}
			if len(in) < requestSize || binary.BigEndian.Uint32(in) != requestMagic {
				break
			}
			r := request{flags: binary.BigEndian.Uint16(in[4:]), typ: binary.BigEndian.Uint16(in[6:]),
				off: binary.BigEndian.Uint64(in[16:]), length: binary.BigEndian.Uint32(in[24:])}
			cookie := binary.BigEndian.Uint64(in[8:])
			in = in[requestSize:]
			if r.typ == cmdDisc {
				clean = true
				break
			}
			if r.typ == cmdWrite {
				if uint64(r.length) > uint64(len(in)) {
					break
				}
				in = in[r.length:]
			}
			pending[cookie] = append(pending[cookie], r)
		}
		// Reads in flight: what of each has been answered.
		got := map[uint64][]bool{}
		take := func(cookie uint64) request {
			rs := pending[cookie]
			if len(rs) == 0 {
				t.Fatalf("reply to cookie %d, which no request in flight has", cookie)
			}
			return rs[0]
		}
		done := func(cookie uint64) {
			pending[cookie] = pending[cookie][1:]
			if len(pending[cookie]) == 0 {
				delete(pending, cookie)
			}
			delete(got, cookie)
		}
		mustRefuse := func(r request) bool {
			end := r.off + uint64(r.length)
			switch {
			case r.typ > cmdBlockStatus:
				return true
			case r.typ == cmdFlush:
				return false
			case end < r.off || end > fuzzExportSize:
				return true
			case !structured && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes):
				return true // read-only
			case !structured && (r.off%512 != 0 || r.length%512 != 0) && r.typ != cmdBlockStatus:
				return true // below the minimum block size
			case (r.typ == cmdRead || r.typ == cmdWrite) && r.length > 64<<10:
				return true
			}
			return false
		}
		for len(out) > 0 {
			switch {
			case len(out) >= simpleReplySize && binary.BigEndian.Uint32(out) == simpleMagic:
				code, cookie := binary.BigEndian.Uint32(out[4:]), binary.BigEndian.Uint64(out[8:])
				r := take(cookie)
				out = out[simpleReplySize:]
				if code == 0 && mustRefuse(r) {
					t.Fatalf("request %+v not refused", r)
				}
				if r.typ == cmdRead {
					if structured {
						t.Fatalf("simple reply to a read after structured replies were negotiated")
					}
					if code == 0 {
						if uint64(len(out)) < uint64(r.length) {
							t.Fatalf("read of %d answered with %d bytes", r.length, len(out))
						}
						out = out[r.length:]
					}
				}
				done(cookie)
			case len(out) >= structuredHdrSize && binary.BigEndian.Uint32(out) == structuredMagic:
				if !structured {
					t.Fatalf("structured reply without negotiating it")
				}
				fl, typ := binary.BigEndian.Uint16(out[4:]), binary.BigEndian.Uint16(out[6:])
				cookie, n := binary.BigEndian.Uint64(out[8:]), binary.BigEndian.Uint32(out[16:])
				if uint64(n) > uint64(len(out)-structuredHdrSize) {
					t.Fatalf("structured chunk of %d bytes, %d written", n, len(out)-structuredHdrSize)
				}
				data := out[structuredHdrSize : structuredHdrSize+n]
				out = out[structuredHdrSize+n:]
				r := take(cookie)
				switch typ {
				case replyOffsetData, replyOffsetHole:
					if r.typ != cmdRead || len(data) < 8 {
						t.Fatalf("chunk %d to %+v", typ, r)
					}
					off, l := binary.BigEndian.Uint64(data), uint64(len(data)-8)
					if typ == replyOffsetHole {
						if len(data) != 12 {
							t.Fatalf("hole chunk of %d bytes", len(data))
						}
						l = uint64(binary.BigEndian.Uint32(data[8:]))
					}
					if off < r.off || off+l > r.off+uint64(r.length) || l == 0 {
						t.Fatalf("chunk [%d,+%d) outside read %+v", off, l, r)
					}
					if got[cookie] == nil {
						got[cookie] = make([]bool, r.length)
					}
					for i := off - r.off; i < off-r.off+l; i++ {
						if got[cookie][i] {
							t.Fatalf("byte %d of read %+v sent twice", i, r)
						}
						got[cookie][i] = true
					}
				case replyBlockStatus:
					if r.typ != cmdBlockStatus || len(data) < 12 || (len(data)-4)%8 != 0 {
						t.Fatalf("block status chunk of %d bytes to %+v", len(data), r)
					}
				case replyError:
					if mustRefuse(r) || fl&replyFlagDone != 0 {
						break
					}
				case replyNone:
				default:
					t.Fatalf("structured chunk type %d", typ)
				}
				if fl&replyFlagDone != 0 {
					if typ == replyError {
						// refused or failed: fine
					} else if mustRefuse(r) {
						t.Fatalf("request %+v not refused", r)
					} else if r.typ == cmdRead {
						for i, b := range got[cookie] {
							if !b {
								t.Fatalf("read %+v succeeded without byte %d", r, i)
							}
						}
						if r.length > 0 && got[cookie] == nil {
							t.Fatalf("read %+v succeeded with no data", r)
						}
					}
					done(cookie)
				}
			default:
				t.Fatalf("unknown reply % x", out[:min(len(out), 20)])
			}
		}
		if clean && len(pending) > 0 {
			t.Fatalf("requests never answered: %v", pending)
		}
	})
}
