package nbdexport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/nbdexport"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// Tests of nbdexport.Run, the serve loop of nbdd, on a segment of their
// own and without vlmcd: what the loop owns (sockets, the clients file,
// its port, shutdown) rather than the volumes it serves (export_test.go).

const endpointPort = 2

func runOptions(segment, dir string) nbdexport.Options {
	return nbdexport.Options{
		Peer:        peer.Options{Role: "nbdtest", Segment: segment, PortStart: endpointPort, PortEnd: -1, NrOps: 4, NrThreads: 1},
		VlmcdPort:   1,
		Socket:      filepath.Join(dir, "nbd.sock"),
		ClientsFile: filepath.Join(dir, "nbd.clients"),
		TLS:         nbdexport.TLSOptions{Mode: config.TLSOff},
	}
}

// waitClients waits (up to a minute, a loaded machine) until the clients
// file says want; it fails at once if Run returned (on done).
func waitClients(t *testing.T, path string, want int, done <-chan error) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if got = strings.TrimSpace(string(b)); got == fmt.Sprint(want) {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned while serving: %v", err)
		default:
		}
	}
	t.Fatalf("clients file %s: %q after a minute, want %d", path, got, want)
}

// TestRunServesUntilCancelled: Run replaces a socket left by a crash,
// keeps the number of connected clients in the clients file, refuses the
// requests sent to its port, and when its context ends returns nil
// having removed the socket and the clients file and unbound its port.
func TestRunServesUntilCancelled(t *testing.T) {
	name := fmt.Sprintf("nbdexport-run-%d", time.Now().UnixNano())
	s, err := xseg.Create(xseg.Config{Name: name, SizeMiB: 16, Ports: 16, DynPorts: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer xseg.Destroy(name)
	defer s.Close()
	o := runOptions(name, t.TempDir())

	// A socket file nobody answers on, as a crash leaves it.
	l, err := net.Listen("unix", o.Socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(o.Socket); err != nil {
		t.Fatalf("stale socket: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- nbdexport.Run(ctx, o) }()
	waitClients(t, o.ClientsFile, 0, done)

	conn, err := net.Dial("unix", o.Socket)
	if err != nil {
		t.Fatalf("dial %s: %v", o.Socket, err)
	}
	greeting := make([]byte, 8)
	if _, err := io.ReadFull(conn, greeting); err != nil || string(greeting) != "NBDMAGIC" {
		t.Fatalf("greeting on %s: %q, %v", o.Socket, greeting, err)
	}
	waitClients(t, o.ClientsFile, 1, done)
	conn.Close()
	waitClients(t, o.ClientsFile, 0, done)

	c, err := peer.Dial(name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Alloc(0)
	if err != nil {
		t.Fatal(err)
	}
	r.SetOp(xseg.OpPing)
	rep, err := c.Call(ctx, r, endpointPort)
	if err != nil {
		t.Fatalf("PING to port %d: %v", endpointPort, err)
	}
	if err := rep.Err(); !errors.Is(err, errs.ErrNotSupported) {
		t.Errorf("PING to the endpoint's port %d: %v, want %v", endpointPort, err, errs.ErrNotSupported)
	}
	c.Put(rep)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after its context ended: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return a minute after its context ended")
	}
	for _, f := range []string{o.Socket, o.ClientsFile} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Run returned: %v, want it removed", f, err)
		}
	}
	if ps, err := s.PortStat(endpointPort); err != nil || ps.PID != 0 {
		t.Errorf("port %d after Run returned: bound by pid %d (%v), want unbound", endpointPort, ps.PID, err)
	}
}

// TestRunRefusesBusySocket: a socket another process answers on is left
// alone, and Run fails with ErrBusy before it touches the segment.
func TestRunRefusesBusySocket(t *testing.T) {
	o := runOptions("nbdexport-no-such-segment", t.TempDir())
	l, err := net.Listen("unix", o.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if err := nbdexport.Run(context.Background(), o); !errors.Is(err, errs.ErrBusy) {
		t.Fatalf("Run on a socket in use: %v, want %v", err, errs.ErrBusy)
	}
	if c, err := net.Dial("unix", o.Socket); err != nil {
		t.Errorf("the other process's socket after Run: %v", err)
	} else {
		c.Close()
	}
}

// TestRunRefusesUnknownTLSMode: a TLS mode other than off and require is
// ErrInvalid, and Run closes the socket it opened.
func TestRunRefusesUnknownTLSMode(t *testing.T) {
	o := runOptions("nbdexport-no-such-segment", t.TempDir())
	o.Listen = "127.0.0.1:0"
	o.TLS.Mode = "maybe"
	err := nbdexport.Run(context.Background(), o)
	if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), `"maybe"`) {
		t.Fatalf("Run with TLS mode maybe: %v, want %v naming the mode", err, errs.ErrInvalid)
	}
	if _, err := os.Stat(o.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Run failed: %v, want it removed", o.Socket, err)
	}
}
