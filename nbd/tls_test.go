package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testpki"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// tlsServer serves b on a fresh TCP loopback address with policy t.
func tlsServer(t *testing.T, b Backend, o Options, tp *TLS) (srv *Server, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no TCP loopback: %v", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv = NewServer(b, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ctx, l, tp) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, l.Addr().String()
}

// pki is a CA, the server's TLS directory and the policy built from it.
type pki struct {
	ca        *testpki.CA
	serverDir string
	cfg       *tls.Config
}

func newPKI(t *testing.T) *pki {
	ca := testpki.NewCA(t, "archipelago test CA")
	p := &pki{ca: ca, serverDir: ca.ServerDir(t)}
	cfg, err := LoadTLSDir(p.serverDir, true)
	if err != nil {
		t.Fatal(err)
	}
	p.cfg = cfg
	return p
}

// clientTLS is the client side of dir (a testpki.ClientDir).
func clientTLS(t *testing.T, dir string) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(b)
	c := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem")); err == nil {
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

// startTLS sends NBD_OPT_STARTTLS, expects NBD_REP_ACK and runs the TLS
// handshake; the client then speaks over TLS.
func (c *client) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	c.opt(optStartTLS, nil)
	if r := c.optReply(); r.typ != repAck {
		c.t.Fatalf("NBD_OPT_STARTTLS: reply %#x %s", r.typ, r.data)
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	// The server checks the client's certificate after the client has
	// finished its side: a refusal shows at the first read.
	c.nc, c.br = tc, bufio.NewReader(tc)
	return nil
}

func (c *client) expect(opt uint32, data []byte, typ uint32) {
	c.t.Helper()
	c.opt(opt, data)
	if r := c.optReplies(); r[len(r)-1].typ != typ {
		c.t.Fatalf("option %d: reply %#x %s, want %#x", opt, r[len(r)-1].typ, r[len(r)-1].data, typ)
	}
}

// go_ ends the handshake with NBD_OPT_GO for name.
func (c *client) goExport(name string) {
	c.t.Helper()
	c.opt(optGo, infoData(name, infoBlockSize))
	for _, r := range c.optReplies() {
		switch {
		case r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport:
			c.size = binary.BigEndian.Uint64(r.data[2:])
			c.flags = binary.BigEndian.Uint16(r.data[10:])
		case r.typ&(1<<31) != 0:
			c.t.Fatalf("NBD_OPT_GO %q: error %#x %s", name, r.typ, r.data)
		}
	}
}

// TestTLSRequired: with TLS required, every option but STARTTLS and
// ABORT is refused with NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME drops
// the client; after STARTTLS the options negotiated before are forgotten
// and the export is served over TLS; a second STARTTLS is invalid.
func TestTLSRequired(t *testing.T) {
	p := newPKI(t)
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	srv, addr := tlsServer(t, m, Options{}, &TLS{Config: p.cfg, Require: true})
	good := testpki.ClientDir(t, p.ca, p.ca, "client1")

	c := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	for _, o := range []struct {
		opt  uint32
		data []byte
	}{
		{optList, nil}, {optStructuredReply, nil}, {optInfo, infoData("vol")}, {optGo, infoData("vol")},
		{optSetMetaContext, metaData("vol", metaBaseAllocation)}, {99, []byte("x")},
	} {
		c.expect(o.opt, o.data, repErrTLSReqd)
	}
	c.expect(optStartTLS, []byte("x"), repErrInvalid)
	if err := c.startTLS(clientTLS(t, good)); err != nil {
		t.Fatal(err)
	}
	c.expect(optStartTLS, nil, repErrInvalid)
	c.opt(optList, nil)
	if rs := c.optReplies(); len(rs) != 2 || rs[0].typ != repServer {
		t.Fatalf("NBD_OPT_LIST over TLS: %+v", rs)
	}
	c.expect(optStructuredReply, nil, repAck)
	c.structured = true
	c.goExport("vol")
	if c.size != 1<<20 {
		t.Fatalf("size %d", c.size)
	}
	c.pwrite(4096, testutil.Pattern(4096, 3))
	if !bytes.Equal(c.pread(4096, 4096), testutil.Pattern(4096, 3)) {
		t.Fatal("read back over TLS differs")
	}

	// NBD_OPT_EXPORT_NAME before TLS cannot be refused: the client is
	// dropped.
	d := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	d.opt(optExportName, []byte("vol"))
	if !d.closed() {
		t.Fatal("NBD_OPT_EXPORT_NAME before STARTTLS: connection not closed")
	}
	// Structured replies negotiated before STARTTLS are forgotten.
	e := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	if err := e.startTLS(clientTLS(t, good)); err != nil {
		t.Fatal(err)
	}
	e.goExport("vol")
	if e.flags&flagSendDF != 0 {
		t.Fatal("structured replies without negotiating them over TLS")
	}
	c.disc()
	e.disc()
	waitClients(t, srv, 0)
}

// TestTLSRefusesClients: a client with no certificate, one signed by
// another CA, and one that does not trust the server's CA do not get
// through; bytes sent after STARTTLS before its answer (a plain-text
// injection) drop the connection.
func TestTLSRefusesClients(t *testing.T) {
	p := newPKI(t)
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	srv, addr := tlsServer(t, m, Options{}, &TLS{Config: p.cfg, Require: true})
	other := testpki.NewCA(t, "another CA")
	for name, dir := range map[string]string{
		"no client certificate":      testpki.ClientDir(t, p.ca, nil, ""),
		"certificate of another CA":  testpki.ClientDir(t, p.ca, other, "intruder"),
		"server's CA is not trusted": testpki.ClientDir(t, other, p.ca, "client1"),
	} {
		c := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
		err := c.startTLS(clientTLS(t, dir))
		if err == nil {
			// The server's refusal of the client's certificate shows
			// at the first exchange.
			c.opt(optList, nil)
			var b [1]byte
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.ReadFull(c.br, b[:])
		}
		if err == nil {
			t.Errorf("%s: got through", name)
		}
	}
	c := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	hdr := binary.BigEndian.AppendUint64(nil, optMagic)
	hdr = binary.BigEndian.AppendUint32(hdr, optStartTLS)
	hdr = binary.BigEndian.AppendUint32(hdr, 0)
	inj := binary.BigEndian.AppendUint64(hdr, optMagic) // "sent over TLS"
	inj = binary.BigEndian.AppendUint32(inj, optGo)
	inj = binary.BigEndian.AppendUint32(inj, 0)
	c.write(inj)
	if !c.closed() {
		t.Fatal("data after NBD_OPT_STARTTLS before its answer: connection not closed")
	}
	waitClients(t, srv, 0)
}

// TestTLSOptional: without Require, plain clients are served and
// STARTTLS is the client's choice; without TLS, STARTTLS is unsupported.
func TestTLSOptional(t *testing.T) {
	p := newPKI(t)
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	_, addr := tlsServer(t, m, Options{}, &TLS{Config: p.cfg})
	c := connect(t, "tcp:"+addr, "vol", true, false)
	c.pwrite(0, testutil.Pattern(512, 1))
	d := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	if err := d.startTLS(clientTLS(t, testpki.ClientDir(t, p.ca, p.ca, "c"))); err != nil {
		t.Fatal(err)
	}
	d.goExport("vol")
	if !bytes.Equal(d.pread(0, 512), testutil.Pattern(512, 1)) {
		t.Fatal("read over TLS differs")
	}
	_, plain := tlsServer(t, m, Options{}, nil)
	e := dial(t, "tcp:"+plain, clientFixedNewstyle|clientNoZeroes)
	e.expect(optStartTLS, nil, repErrUnsup)
	e.goExport("vol")
}

// slowOpen is a backend whose Open waits for its context to end.
type slowOpen struct{ *MemBackend }

func (s slowOpen) Open(ctx context.Context, name string) (Export, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestHandshakeTimeoutStalls: the handshake deadline covers every way of
// stalling in it: silence after the greeting, an export whose opening
// does not end, and a TLS handshake never begun after STARTTLS. Each such
// client is dropped and stops counting as a client.
func TestHandshakeTimeoutStalls(t *testing.T) {
	p := newPKI(t)
	m := memWith(t, map[string]MemOptions{"vol": {}}, 1<<20)
	o := Options{HandshakeTimeout: 300 * time.Millisecond}
	srv, addr := tlsServer(t, slowOpen{m}, o, &TLS{Config: p.cfg})

	silent := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	opening := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	opening.opt(optGo, infoData("vol"))
	tlsStall := dial(t, "tcp:"+addr, clientFixedNewstyle|clientNoZeroes)
	tlsStall.opt(optStartTLS, nil)
	if r := tlsStall.optReply(); r.typ != repAck {
		t.Fatalf("STARTTLS: %#x", r.typ)
	}
	for name, c := range map[string]*client{"silent": silent, "export opening": opening, "TLS handshake": tlsStall} {
		if !c.closed() {
			t.Errorf("%s: stalled handshake not timed out", name)
		}
	}
	waitClients(t, srv, 0)
}

// TestTLSRealClients: qemu-io (tls-creds-x509, endpoint=client) and
// nbdinfo (nbds:// with tls-certificates) read and write over TLS with
// certificates made here; without TLS, or with a certificate of another
// CA, they are refused.
func TestTLSRealClients(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdinfo")
	p := newPKI(t)
	m := memWith(t, map[string]MemOptions{"vol": {}}, 64<<20)
	_, addr := tlsServer(t, m, Options{}, &TLS{Config: p.cfg, Require: true})
	host, port, _ := net.SplitHostPort(addr)
	good := testpki.ClientDir(t, p.ca, p.ca, "qemu")
	bad := testpki.ClientDir(t, p.ca, testpki.NewCA(t, "another CA"), "intruder")

	qemu := func(dir string, cmds ...string) error {
		return testutil.QemuIOArgs(t, []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir,
			"--image-opts", fmt.Sprintf("driver=nbd,server.type=inet,server.host=%s,server.port=%s,export=vol,tls-creds=tls0", host, port)},
			cmds...)
	}
	if err := qemu(good, "write -P 0xab 1M 1M", "flush", "read -P 0xab 1M 1M"); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	if err := qemu(bad, "read 0 4k"); err == nil {
		t.Fatal("qemu-io with a certificate of another CA got through")
	}
	uri := fmt.Sprintf("nbds://%s/vol?tls-certificates=%s", addr, good)
	if out := strings.TrimSpace(testutil.Run(t, "nbdinfo", "--size", uri)); out != fmt.Sprint(64<<20) {
		t.Fatalf("nbdinfo over TLS: size %s", out)
	}
	if out := testutil.Run(t, "nbdinfo", "--map", uri); !strings.Contains(out, "1048576     1048576    0  data") {
		t.Fatalf("nbdinfo --map over TLS does not show qemu-io's write:\n%s", out)
	}
	if out, err := testutil.RunErr(t, "nbdinfo", "--size", "nbd://"+addr+"/vol"); err == nil {
		t.Fatalf("nbdinfo without TLS got through: %s", out)
	}
	if out, err := testutil.RunErr(t, "nbdinfo", "--size", fmt.Sprintf("nbds://%s/vol?tls-certificates=%s", addr, bad)); err == nil {
		t.Fatalf("nbdinfo with a certificate of another CA got through: %s", out)
	}
}
