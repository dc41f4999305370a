package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

func memWith(t *testing.T, exports map[string]MemOptions, size uint64) *MemBackend {
	t.Helper()
	m := NewMemBackend()
	for name, o := range exports {
		if err := m.Add(name, size, o); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func TestHandshakeOptions(t *testing.T) {
	m := memWith(t, map[string]MemOptions{
		"vol1": {Description: "first volume"},
		"vol2": {ReadOnly: true, MinBlock: 512},
	}, 1<<20)
	ts := startServer(t, m, Options{})
	c := dial(t, ts.sock, clientFixedNewstyle|clientNoZeroes)

	// NBD_OPT_LIST: one NBD_REP_SERVER per export, then ACK.
	c.opt(optList, nil)
	rs := c.optReplies()
	var names []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer || r.opt != optList {
			t.Fatalf("list reply %+v", r)
		}
		names = append(names, string(r.data[4:4+binary.BigEndian.Uint32(r.data)]))
	}
	if fmt.Sprint(names) != "[vol1 vol2]" || rs[len(rs)-1].typ != repAck {
		t.Fatalf("list: %v, last %#x", names, rs[len(rs)-1].typ)
	}
	c.opt(optList, []byte("x"))
	if r := c.optReply(); r.typ != repErrInvalid {
		t.Fatalf("list with data: %#x", r.typ)
	}

	// NBD_OPT_INFO with every information request.
	c.opt(optInfo, infoData("vol1", infoName, infoDescription, infoBlockSize))
	got := map[uint16][]byte{}
	rs = c.optReplies()
	for _, r := range rs[:len(rs)-1] {
		got[binary.BigEndian.Uint16(r.data)] = r.data[2:]
	}
	if rs[len(rs)-1].typ != repAck {
		t.Fatalf("info: final %#x", rs[len(rs)-1].typ)
	}
	exp := got[infoExport]
	if binary.BigEndian.Uint64(exp) != 1<<20 {
		t.Errorf("size %d", binary.BigEndian.Uint64(exp))
	}
	wantFlags := uint16(flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim | flagSendWriteZeroes | flagCanMultiConn)
	if f := binary.BigEndian.Uint16(exp[8:]); f != wantFlags {
		t.Errorf("flags %#x, want %#x", f, wantFlags)
	}
	if string(got[infoName]) != "vol1" || string(got[infoDescription]) != "first volume" {
		t.Errorf("name %q description %q", got[infoName], got[infoDescription])
	}
	bs := got[infoBlockSize]
	if mn, pr, mx := binary.BigEndian.Uint32(bs), binary.BigEndian.Uint32(bs[4:]), binary.BigEndian.Uint32(bs[8:]); mn != 1 || pr != 4096 || mx != 32<<20 {
		t.Errorf("block sizes %d %d %d", mn, pr, mx)
	}

	// Read-only export with 512-byte blocks.
	c.opt(optInfo, infoData("vol2"))
	for _, r := range c.optReplies() {
		if r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport {
			if f := binary.BigEndian.Uint16(r.data[10:]); f != flagHasFlags|flagReadOnly|flagSendFlush|flagSendFUA|flagCanMultiConn {
				t.Errorf("read-only flags %#x", f)
			}
		}
		if r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoBlockSize {
			if mn := binary.BigEndian.Uint32(r.data[2:]); mn != 512 {
				t.Errorf("read-only min block %d", mn)
			}
		}
	}

	// Errors leave the haggling going.
	c.opt(optInfo, infoData("nope"))
	if r := c.optReply(); r.typ != repErrUnknown {
		t.Fatalf("unknown export: %#x", r.typ)
	}
	c.opt(optGo, infoData("nope"))
	if r := c.optReply(); r.typ != repErrUnknown || r.opt != optGo {
		t.Fatalf("go unknown export: %+v", r)
	}
	c.opt(optInfo, []byte{0, 0, 0, 9, 'a'})
	if r := c.optReply(); r.typ != repErrInvalid {
		t.Fatalf("malformed info: %#x", r.typ)
	}
	c.opt(optStartTLS, nil)
	if r := c.optReply(); r.typ != repErrUnsup {
		t.Fatalf("starttls: %#x", r.typ)
	}
	c.opt(4242, []byte("whatever"))
	if r := c.optReply(); r.typ != repErrUnsup || r.opt != 4242 {
		t.Fatalf("unknown option: %+v", r)
	}
	c.opt(777, make([]byte, maxOptionLen+1))
	if r := c.optReply(); r.typ != repErrTooBig {
		t.Fatalf("huge option: %#x", r.typ)
	}

	// Meta contexts: SET needs structured replies; LIST lists base:allocation.
	c.opt(optSetMetaContext, metaData("vol1", metaBaseAllocation))
	if r := c.optReply(); r.typ != repErrInvalid {
		t.Fatalf("set meta before structured: %#x", r.typ)
	}
	c.opt(optStructuredReply, nil)
	if r := c.optReply(); r.typ != repAck {
		t.Fatalf("structured: %#x", r.typ)
	}
	for _, q := range [][]string{nil, {"base:"}, {metaBaseAllocation}, {"qemu:dirty-bitmap:x", "base:allocation"}} {
		c.opt(optListMetaContext, metaData("vol1", q...))
		rs := c.optReplies()
		if len(rs) != 2 || rs[0].typ != repMetaContext || string(rs[0].data[4:]) != metaBaseAllocation {
			t.Fatalf("list meta %q: %+v", q, rs)
		}
	}
	c.opt(optListMetaContext, metaData("vol1", "x-other:thing"))
	if rs := c.optReplies(); len(rs) != 1 || rs[0].typ != repAck {
		t.Fatalf("list meta of another namespace: %+v", rs)
	}
	c.opt(optSetMetaContext, []byte{0, 0, 0, 4, 'v'})
	if r := c.optReply(); r.typ != repErrInvalid {
		t.Fatalf("malformed set meta: %#x", r.typ)
	}

	// NBD_OPT_ABORT: ACK, then the server closes.
	c.opt(optAbort, nil)
	if r := c.optReply(); r.typ != repAck {
		t.Fatalf("abort: %#x", r.typ)
	}
	if !c.closed() {
		t.Fatal("connection open after NBD_OPT_ABORT")
	}
}

func TestExportName(t *testing.T) {
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	ts := startServer(t, m, Options{})
	for _, noZeroes := range []bool{false, true} {
		cf := uint32(clientFixedNewstyle)
		if noZeroes {
			cf |= clientNoZeroes
		}
		c := dial(t, ts.sock, cf)
		c.opt(optExportName, []byte("vol"))
		b := make([]byte, 10)
		c.full(b)
		if binary.BigEndian.Uint64(b) != 1<<20 {
			t.Fatalf("size %d", binary.BigEndian.Uint64(b))
		}
		if !noZeroes {
			z := make([]byte, 124)
			c.full(z)
			if !bytes.Equal(z, make([]byte, 124)) {
				t.Fatal("reserved bytes not zero")
			}
		}
		c.pwrite(4096, testutil.Pattern(4096, 3))
		if !bytes.Equal(c.pread(4096, 4096), testutil.Pattern(4096, 3)) {
			t.Fatal("read back differs")
		}
		c.disc()
		if !c.closed() {
			t.Fatal("open after NBD_CMD_DISC")
		}
	}
	// An unknown export cannot be refused with an error: the server closes.
	c := dial(t, ts.sock, clientFixedNewstyle)
	c.opt(optExportName, []byte("nope"))
	if !c.closed() {
		t.Fatal("open after NBD_OPT_EXPORT_NAME of an unknown export")
	}
	// Unknown client flags close the connection.
	c = dial(t, ts.sock, 1<<7)
	if !c.closed() {
		t.Fatal("open after unknown client flags")
	}
}

// TestMalformedRequests: every refused request gets an error reply, and
// the next request on the same connection still works.
func TestMalformedRequests(t *testing.T) {
	const size = 8 << 20
	m := memWith(t, map[string]MemOptions{"rw": {}, "ro": {ReadOnly: true}, "b512": {MinBlock: 512}}, size)
	ts := startServer(t, m, Options{})
	type tc struct {
		name    string
		export  string
		typ     uint16
		flags   uint16
		off     uint64
		n       uint32
		payload bool
		simple  uint32 // error without structured replies
		structd uint32 // error with them
	}
	big := uint32(32<<20 + 4096)
	cases := []tc{
		{"read past end", "rw", cmdRead, 0, size - 4096, 8192, false, einval, einval},
		{"read offset past end", "rw", cmdRead, 0, 1 << 40, 512, false, einval, einval},
		{"read wrapping offset", "rw", cmdRead, 0, ^uint64(0) - 10, 512, false, einval, einval},
		{"oversize read", "rw", cmdRead, 0, 0, big, false, einval, eoverflow},
		{"write past end", "rw", cmdWrite, 0, size - 4096, 8192, true, enospc, enospc},
		{"oversize write", "rw", cmdWrite, 0, 0, big, true, einval, einval},
		{"trim past end", "rw", cmdTrim, 0, size, 4096, false, einval, einval},
		{"zeroes past end", "rw", cmdWriteZeroes, 0, size, 4096, false, enospc, enospc},
		{"unknown command", "rw", 99, 0, 0, 512, false, einval, einval},
		{"cache", "rw", cmdCache, 0, 0, 512, false, einval, einval},
		{"unknown flag", "rw", cmdRead, 1 << 9, 0, 512, false, einval, einval},
		{"no-hole on write", "rw", cmdWrite, cmdFlagNoHole, 0, 512, true, einval, einval},
		{"fast zero", "rw", cmdWriteZeroes, cmdFlagFastZero, 0, 512, false, einval, einval},
		{"DF without structured", "rw", cmdRead, cmdFlagDF, 0, 512, false, einval, 0},
		{"block status without meta", "rw", cmdBlockStatus, 0, 0, 512, false, einval, einval},
		{"misaligned read", "b512", cmdRead, 0, 100, 512, false, einval, einval},
		{"misaligned write", "b512", cmdWrite, 0, 512, 100, true, einval, einval},
		{"write on read-only", "ro", cmdWrite, 0, 0, 4096, true, eperm, eperm},
		{"write on read-only with FUA", "ro", cmdWrite, cmdFlagFUA, 0, 1 << 20, true, eperm, eperm},
		{"trim on read-only", "ro", cmdTrim, 0, 0, 4096, false, eperm, eperm},
		{"zeroes on read-only", "ro", cmdWriteZeroes, 0, 0, 4096, false, eperm, eperm},
	}
	for _, structured := range []bool{false, true} {
		conns := map[string]*client{}
		for _, e := range []string{"rw", "ro", "b512"} {
			conns[e] = connect(t, ts.sock, e, structured, false)
		}
		conns["rw"].pwrite(0, testutil.Pattern(4096, 1))
		for _, k := range cases {
			t.Run(fmt.Sprintf("%s/structured=%v", k.name, structured), func(t *testing.T) {
				c := conns[k.export]
				c.t = t
				var payload []byte
				if k.payload {
					payload = testutil.Pattern(int(k.n), 9)
				}
				r := c.do(k.typ, k.flags, k.off, k.n, payload)
				want := k.simple
				if structured {
					want = k.structd
				}
				if r.err != want {
					t.Fatalf("error %d, want %d (%v)", r.err, want, r)
				}
				if structured && want != 0 && (r.simple || r.msg == "") {
					t.Errorf("structured error without message: %v", r)
				}
				// The stream is still in sync.
				got := c.pread(0, 4096)
				if k.export == "rw" && !bytes.Equal(got, testutil.Pattern(4096, 1)) {
					t.Fatal("read after the refused request returned the wrong data")
				}
			})
		}
	}
	// Read-only data is intact after all the refused writes.
	c := connect(t, ts.sock, "ro", true, false)
	if !bytes.Equal(c.pread(0, 1<<20), make([]byte, 1<<20)) {
		t.Fatal("read-only export changed")
	}
}

func TestBadMagicCloses(t *testing.T) {
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	ts := startServer(t, m, Options{})
	c := connect(t, ts.sock, "vol", true, false)
	c.pwrite(0, testutil.Pattern(512, 1))
	p := make([]byte, requestSize)
	binary.BigEndian.PutUint32(p, 0xdeadbeef)
	c.write(p)
	if !c.closed() {
		t.Fatal("connection open after a bad request magic")
	}
	waitClients(t, ts.srv, 0)
	// The server still serves others.
	c = connect(t, ts.sock, "vol", false, false)
	if !bytes.Equal(c.pread(0, 512), testutil.Pattern(512, 1)) {
		t.Fatal("data lost")
	}
}

func waitClients(t *testing.T, s *Server, n int) {
	t.Helper()
	testutil.WaitForErr(t, 5*time.Second, fmt.Sprintf("%d clients", n), func() error {
		if c := s.Clients(); c != n {
			return fmt.Errorf("Clients() = %d", c)
		}
		return nil
	})
}

func TestStructuredReadHoles(t *testing.T) {
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	ts := startServer(t, m, Options{})
	c := connect(t, ts.sock, "vol", true, true)
	c.pwrite(8192, testutil.Pattern(8192, 5))

	r := c.do(cmdRead, 0, 0, 32768, nil)
	want := make([]byte, 32768)
	copy(want[8192:], testutil.Pattern(8192, 5))
	if r.err != 0 || !bytes.Equal(r.data, want) {
		t.Fatalf("sparse read: %v", r)
	}
	kinds := ""
	for _, ch := range r.chunks {
		kinds += map[uint16]string{replyOffsetData: "D", replyOffsetHole: "H", replyNone: "N"}[ch.typ]
	}
	if kinds != "HDH" || r.chunks[2].flags&replyFlagDone == 0 {
		t.Fatalf("chunks %s %v", kinds, r.chunks)
	}
	// DF: one data chunk.
	if c.flags&flagSendDF == 0 {
		t.Fatal("NBD_FLAG_SEND_DF not advertised with structured replies")
	}
	r = c.do(cmdRead, cmdFlagDF, 0, 32768, nil)
	if r.err != 0 || len(r.chunks) != 1 || r.chunks[0].typ != replyOffsetData || !bytes.Equal(r.data, want) {
		t.Fatalf("DF read: %v", r)
	}
	// A read of 0 bytes succeeds with an empty structured reply.
	if r = c.do(cmdRead, 0, 0, 0, nil); r.err != 0 || r.simple {
		t.Fatalf("empty read: %v", r)
	}
	// Small holes go as data.
	c.pwrite(65536, testutil.Pattern(512, 1))
	r = c.do(cmdRead, 0, 65536, 4096, nil)
	if len(r.chunks) != 1 || r.chunks[0].typ != replyOffsetData {
		t.Fatalf("read within a page: %v", r)
	}
}

func TestBlockStatus(t *testing.T) {
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	ts := startServer(t, m, Options{})
	c := connect(t, ts.sock, "vol", true, true)
	c.pwrite(65536, testutil.Pattern(8192, 5))

	r := c.do(cmdBlockStatus, 0, 0, 1<<20, nil)
	want := [][2]uint32{{65536, stateHole | stateZero}, {8192, 0}, {1<<20 - 65536 - 8192, stateHole | stateZero}}
	if r.err != 0 || fmt.Sprint(r.extents) != fmt.Sprint(want) {
		t.Fatalf("block status: %v", r)
	}
	r = c.do(cmdBlockStatus, cmdFlagReqOne, 4096, 1<<19, nil)
	if fmt.Sprint(r.extents) != fmt.Sprint([][2]uint32{{61440, 3}}) {
		t.Fatalf("REQ_ONE: %v", r)
	}
	r = c.do(cmdBlockStatus, cmdFlagReqOne, 65536, 4096, nil)
	if fmt.Sprint(r.extents) != fmt.Sprint([][2]uint32{{4096, 0}}) {
		t.Fatalf("REQ_ONE within data: %v", r)
	}

	// TRIM frees; WRITE_ZEROES with NO_HOLE allocates, without may free.
	if r = c.do(cmdTrim, 0, 65536, 4096, nil); r.err != 0 {
		t.Fatal(r)
	}
	if r = c.do(cmdWriteZeroes, cmdFlagNoHole, 0, 4096, nil); r.err != 0 {
		t.Fatal(r)
	}
	if r = c.do(cmdWriteZeroes, cmdFlagFUA, 69632, 4096, nil); r.err != 0 {
		t.Fatal(r)
	}
	r = c.do(cmdBlockStatus, 0, 0, 1<<20, nil)
	want = [][2]uint32{{4096, 0}, {1<<20 - 4096, stateHole | stateZero}}
	if fmt.Sprint(r.extents) != fmt.Sprint(want) {
		t.Fatalf("after trim and zeroes: %v", r)
	}
	if !bytes.Equal(c.pread(0, 1<<17), make([]byte, 1<<17)) {
		t.Fatal("trimmed or zeroed range does not read as zeroes")
	}

	// base:allocation selected for another export: no block status here.
	m.Add("other", 4096, MemOptions{})
	c2 := dial(t, ts.sock, clientFixedNewstyle|clientNoZeroes)
	c2.opt(optStructuredReply, nil)
	c2.optReply()
	c2.opt(optSetMetaContext, metaData("other", metaBaseAllocation))
	c2.optReplies()
	c2.opt(optGo, infoData("vol"))
	c2.optReplies()
	c2.structured = true
	if r = c2.do(cmdBlockStatus, 0, 0, 4096, nil); r.err != einval {
		t.Fatalf("block status with the context of another export: %v", r)
	}
}

// hookBackend wraps a MemBackend's exports (hiding their optional
// abilities) so tests can delay or fail requests.
type hookBackend struct {
	*MemBackend
	read  func(ctx context.Context, off uint64) error
	flush func() error
}

type hookExport struct {
	Export
	b *hookBackend
}

func (h *hookBackend) Open(ctx context.Context, name string) (Export, error) {
	e, err := h.MemBackend.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &hookExport{Export: e, b: h}, nil
}

func (e *hookExport) ReadAt(ctx context.Context, p []byte, off uint64) error {
	if e.b.read != nil {
		if err := e.b.read(ctx, off); err != nil {
			return err
		}
	}
	return e.Export.ReadAt(ctx, p, off)
}

func (e *hookExport) Flush(ctx context.Context) error {
	if e.b.flush != nil {
		return e.b.flush()
	}
	return nil
}

// TestOutOfOrder: a slow read does not hold back the replies to requests
// sent after it, and at most MaxInFlight requests are served at once.
func TestOutOfOrder(t *testing.T) {
	gate := make(chan struct{})
	var cur, peak atomic.Int32
	h := &hookBackend{MemBackend: memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)}
	h.read = func(ctx context.Context, off uint64) error {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if off == 0 {
			<-gate
		}
		return nil
	}
	ts := startServer(t, h, Options{MaxInFlight: 4})
	c := connect(t, ts.sock, "vol", false, false)
	slow := c.send(cmdRead, 0, 0, 4096, nil)
	fast := c.send(cmdRead, 0, 4096, 4096, nil)
	if r := c.recv(); r.cookie != fast {
		t.Fatalf("first reply for cookie %d, want the fast read %d", r.cookie, fast)
	}
	// Three slow reads more fill the four slots; a fifth request waits.
	var slows []uint64
	for range 3 {
		slows = append(slows, c.send(cmdRead, 0, 0, 4096, nil))
	}
	last := c.send(cmdFlush, 0, 0, 0, nil)
	time.Sleep(100 * time.Millisecond)
	if p := peak.Load(); p > 4 {
		t.Fatalf("%d reads at once with MaxInFlight 4", p)
	}
	close(gate)
	for _, ck := range append(slows, slow, last) {
		if r := c.wait(ck); r.err != 0 {
			t.Fatal(r)
		}
	}
}

// TestErrorMapping: backend errors become NBD errors, by errors.Is.
func TestErrorMapping(t *testing.T) {
	for err, want := range map[error]uint32{
		nil:                                  0,
		errs.ErrReadOnly:                     eperm,
		errs.ErrInvalid:                      einval,
		errs.ErrNoSpace:                      enospc,
		errs.ErrNotFound:                     eio,
		errs.ErrIO:                           eio,
		errs.ErrCorrupt:                      eio,
		errs.ErrShutdown:                     eshutdown,
		context.Canceled:                     eshutdown,
		fmt.Errorf("x: %w", errs.ErrNoSpace): enospc,
	} {
		if got := errno(err); got != want {
			t.Errorf("errno(%v) = %d, want %d", err, got, want)
		}
	}
	h := &hookBackend{MemBackend: memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)}
	h.read = func(context.Context, uint64) error { return fmt.Errorf("object 7: %w", errs.ErrIO) }
	h.flush = func() error { return fmt.Errorf("segment: %w", errs.ErrNoSpace) }
	ts := startServer(t, h, Options{})
	for _, structured := range []bool{false, true} {
		c := connect(t, ts.sock, "vol", structured, false)
		r := c.do(cmdRead, 0, 0, 4096, nil)
		if r.err != eio || r.data != nil && r.simple {
			t.Fatalf("read error: %v", r)
		}
		if structured && r.msg != "object 7: I/O error" {
			t.Errorf("message %q", r.msg)
		}
		if r = c.do(cmdFlush, 0, 0, 0, nil); r.err != enospc {
			t.Fatalf("flush error: %v", r)
		}
		c.pwrite(0, testutil.Pattern(512, 1))
	}
}

// TestGracefulShutdown: cancelling Serve stops accepting, lets the request
// in flight finish and reply, then closes the connection.
func TestGracefulShutdown(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	h := &hookBackend{MemBackend: memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)}
	h.read = func(ctx context.Context, off uint64) error {
		started <- struct{}{}
		<-gate
		return ctx.Err()
	}
	ts := startServer(t, h, Options{})
	c := connect(t, ts.sock, "vol", true, false)
	idle := dial(t, ts.sock, clientFixedNewstyle) // still haggling
	waitClients(t, ts.srv, 2)
	ck := c.send(cmdRead, 0, 0, 4096, nil)
	<-started

	stopped := make(chan error, 1)
	go func() {
		ts.cancel()
		stopped <- <-ts.done
		ts.done <- nil // for the cleanup
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned with a request in flight: %v", err)
	default:
	}
	if !idle.closed() {
		t.Fatal("connection in handshake not closed on shutdown")
	}
	if err := dialErr(ts.sock); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
	close(gate)
	if r := c.wait(ck); r.err != 0 {
		t.Fatalf("request in flight at shutdown: %v", r)
	}
	if !c.closed() {
		t.Fatal("connection open after shutdown")
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if n := ts.srv.Clients(); n != 0 {
		t.Fatalf("Clients() = %d after shutdown", n)
	}
}

func dialErr(sock string) error {
	c, err := net.Dial("unix", sock)
	if err == nil {
		c.Close()
	}
	return err
}

// TestDiscWaitsForInFlight: NBD_CMD_DISC after requests still in flight;
// they are answered before the server closes.
func TestDiscWaitsForInFlight(t *testing.T) {
	gate := make(chan struct{})
	h := &hookBackend{MemBackend: memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)}
	h.read = func(ctx context.Context, off uint64) error { <-gate; return nil }
	ts := startServer(t, h, Options{})
	c := connect(t, ts.sock, "vol", false, false)
	var cks []uint64
	for i := range 8 {
		cks = append(cks, c.send(cmdRead, 0, uint64(i)*4096, 4096, nil))
	}
	c.disc()
	time.Sleep(50 * time.Millisecond)
	close(gate)
	for _, ck := range cks {
		if r := c.wait(ck); r.err != 0 {
			t.Fatal(r)
		}
	}
	if !c.closed() {
		t.Fatal("open after NBD_CMD_DISC")
	}
}

// TestMultiConn: several connections write disjoint ranges concurrently,
// with many requests in flight each; every connection sees every write.
func TestMultiConn(t *testing.T) {
	const conns, per, bs = 4, 64, 16 << 10
	m := memWith(t, map[string]MemOptions{"vol": {}}, conns*per*bs)
	ts := startServer(t, m, Options{})
	cs := make([]*client, conns)
	for i := range cs {
		cs[i] = connect(t, ts.sock, "vol", i%2 == 0, false)
		if cs[i].flags&flagCanMultiConn == 0 {
			t.Fatal("NBD_FLAG_CAN_MULTI_CONN not advertised")
		}
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cks []uint64
			for j := range per {
				off := uint64((j*conns + i) * bs)
				cks = append(cks, c.send(cmdWrite, cmdFlagFUA, off, bs, testutil.Pattern(bs, byte(i*per+j))))
			}
			for _, ck := range cks {
				if r := c.wait(ck); r.err != 0 {
					t.Error(r)
				}
			}
			if r := c.do(cmdFlush, 0, 0, 0, nil); r.err != 0 {
				t.Error(r)
			}
		}()
	}
	wg.Wait()
	for i, c := range cs {
		for j := range per {
			for k := range conns {
				off := uint64((j*conns + k) * bs)
				if (j+k+i)%7 != 0 {
					continue // a sample is enough
				}
				if !bytes.Equal(c.pread(off, bs), testutil.Pattern(bs, byte(k*per+j))) {
					t.Fatalf("conn %d reads wrong data at %d", i, off)
				}
			}
		}
	}
}

func TestTCPAndHandshakeTimeout(t *testing.T) {
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no TCP loopback: %v", err)
	}
	srv := NewServer(m, Options{HandshakeTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	addr := "tcp:" + l.Addr().String()
	c := connect(t, addr, "vol", true, true)
	c.pwrite(4096, testutil.Pattern(4096, 7))
	if !bytes.Equal(c.pread(4096, 4096), testutil.Pattern(4096, 7)) {
		t.Fatal("TCP read back differs")
	}
	// A client that never finishes the handshake is dropped; one in
	// transmission is not, however idle.
	slow := dial(t, addr, clientFixedNewstyle)
	time.Sleep(400 * time.Millisecond)
	if !slow.closed() {
		t.Fatal("stalled handshake not timed out")
	}
	if !bytes.Equal(c.pread(4096, 4096), testutil.Pattern(4096, 7)) {
		t.Fatal("idle connection in transmission broken")
	}
	if _, err := exec.LookPath("nbdinfo"); err == nil {
		if out := testutil.Run(t, "nbdinfo", "--size", "nbd://"+l.Addr().String()+"/vol"); strings.TrimSpace(out) != "1048576" {
			t.Fatalf("nbdinfo over TCP: %s", out)
		}
	}
}

// TestPayloadBudget: big requests in flight are bounded by bytes too.
func TestPayloadBudget(t *testing.T) {
	defer func(old int64) { maxInFlightBytes = old }(maxInFlightBytes)
	maxInFlightBytes = 1 << 20
	gate := make(chan struct{})
	var cur, peak atomic.Int32
	h := &hookBackend{MemBackend: memWith(t, map[string]MemOptions{"vol": {}}, 4<<20)}
	h.read = func(ctx context.Context, off uint64) error {
		n := cur.Add(1)
		defer cur.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-gate
		return nil
	}
	ts := startServer(t, h, Options{})
	c := connect(t, ts.sock, "vol", true, false)
	var cks []uint64
	for i := range 8 {
		cks = append(cks, c.send(cmdRead, 0, uint64(i%4)<<20, 256<<10, nil))
	}
	cks = append(cks, c.send(cmdRead, 0, 0, 2<<20, nil)) // above the budget: runs alone
	time.Sleep(100 * time.Millisecond)
	if p := peak.Load(); p != 4 {
		t.Fatalf("%d reads of 256 KiB at once with a 1 MiB budget, want 4", p)
	}
	close(gate)
	for _, ck := range cks {
		if r := c.wait(ck); r.err != 0 {
			t.Fatal(r)
		}
	}
}
