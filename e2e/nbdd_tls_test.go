package e2e_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testpki"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// freeTCP returns a loopback address that was free a moment ago.
func freeTCP(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Skipf("no TCP on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestNbddTLS: with `tls = require` in [nbd], volumes are served over
// TCP to qemu-io and nbdinfo with client certificates (made here), and to
// nobody without TLS; a client that stalls in the handshake is dropped
// after handshake_timeout.
func TestNbddTLS(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdinfo")
	ca := testpki.NewCA(t, "archipelago test CA")
	addr := freeTCP(t, "127.0.0.1")
	e := e2etest.New(t, "host-a", fmt.Sprintf("[nbd]\nlisten = %s   # TCP too\ntls = require\ntls_dir = %s\nhandshake_timeout = 1\n", addr, ca.ServerDir(t)))
	e.Start()
	e.Must("vlmc", "create", "vol1", "--size", "64")
	client := testpki.ClientDir(t, ca, ca, "qemu")
	host, port, _ := net.SplitHostPort(addr)
	if err := testutil.QemuIOArgs(t, []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + client,
		"--image-opts", fmt.Sprintf("driver=nbd,server.type=inet,server.host=%s,server.port=%s,export=vol1,tls-creds=tls0", host, port)},
		"write -P 0xab 0 1M", "flush", "read -P 0xab 0 1M"); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	uri := fmt.Sprintf("nbds://%s/vol1?tls-certificates=%s", addr, client)
	if got := strings.TrimSpace(testutil.Run(t, "nbdinfo", "--size", uri)); got != fmt.Sprint(64<<20) {
		t.Fatalf("nbdinfo over TLS: size %s", got)
	}
	if out, err := testutil.RunErr(t, "nbdinfo", "--size", "nbd://"+addr+"/vol1"); err == nil {
		t.Fatalf("nbdinfo without TLS got through: %s", out)
	}
	// The Unix socket needs no TLS.
	if err := testutil.QemuIOReadOnly(t, e.Must("vlmc", "uri", "vol1"), "read -P 0xab 0 1M"); err != nil {
		t.Fatal(err)
	}

	// A client that reads the greeting and then says nothing is dropped.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(nc, greet[:]); err != nil || binary.BigEndian.Uint64(greet[:]) != 0x4e42444d41474943 {
		t.Fatalf("greeting % x: %v", greet, err)
	}
	if n, err := nc.Read(greet[:]); err != io.EOF {
		t.Fatalf("stalled client: read %d bytes, %v; want EOF (dropped after handshake_timeout)", n, err)
	}
}

// TestNbddWarnsWithoutTLS: nbdd warns at start when it serves NBD over
// TCP on an address other than loopback without TLS.
func TestNbddWarnsWithoutTLS(t *testing.T) {
	addr := freeTCP(t, "0.0.0.0")
	e := e2etest.New(t, "host-a", "[nbd]\nlisten = "+addr+"\n")
	e.Start()
	log, err := os.ReadFile(e.Cfg.LogFile("nbd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "level=WARN") || !strings.Contains(string(log), "without TLS") {
		t.Fatalf("no warning of NBD over TCP without TLS in the log of nbd:\n%s", log)
	}
}
