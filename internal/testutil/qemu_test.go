package testutil

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/nbd"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
)

// memExport serves a 4 MiB in-memory export "vol" and a read-only one
// "ro" until the test ends, and returns their URIs.
func memExport(t *testing.T) (rw, ro string) {
	t.Helper()
	m := nbd.NewMemBackend()
	if err := m.Add("vol", 4<<20, nbd.MemOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Add("ro", 4<<20, nbd.MemOptions{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		nbd.NewServer(m, nbd.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Serve(ctx, l)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return nbduri.URI(sock, "vol"), nbduri.URI(sock, "ro")
}

// The qemu-io helpers say when a command failed, although qemu-io may
// exit 0 then: a test that relies on them cannot pass on a wrong read.
func TestQemuIOReportsFailedCommands(t *testing.T) {
	NeedBinaries(t, "qemu-io")
	uri, ro := memExport(t)
	if err := QemuIO(t, uri, "write -P 0x5a 0 64k", "read -P 0x5a 0 64k"); err != nil {
		t.Fatalf("a good write and read: %v", err)
	}
	if err := QemuIO(t, uri, "read -P 0x5b 0 4k"); err == nil || !strings.Contains(err.Error(), "Pattern verification failed") {
		t.Fatalf("a read of the wrong pattern: %v", err)
	}
	if err := QemuIOReadOnly(t, uri, "read -P 0x5a 4k 4k"); err != nil {
		t.Fatalf("a read-only open: %v", err)
	}
	if err := QemuIO(t, ro, "write -P 1 0 4k"); err == nil {
		t.Fatal("a write to a read-only export succeeded")
	}

	s := StartQemuSession(t, uri)
	if out := s.Must("write -P 0x11 1M 4k"); !strings.Contains(out, "wrote 4096/4096") {
		t.Fatalf("session write: %q", out)
	}
	if out := s.Do("read -P 0x12 1M 4k"); !qemuFailed(out) {
		t.Fatalf("session read of the wrong pattern not seen as failed: %q", out)
	}
	s.Close()
	if err := QemuIO(t, uri, "read -P 0x11 1M 4k"); err != nil {
		t.Fatalf("after the session: %v", err)
	}
	k := StartQemuSession(t, uri)
	k.Must("read -P 0x11 1M 4k")
	k.Kill()
}
