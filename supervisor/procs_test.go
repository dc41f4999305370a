package supervisor

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestUnixConns: the connections to a Unix socket are counted from the
// kernel's table, whether accepted or still waiting, and the listener is
// not one of them; a connection to another socket does not count.
func TestUnixConns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nbd.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	other, err := net.Listen("unix", filepath.Join(dir, "other.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	count := func() int {
		t.Helper()
		n, err := unixConns(path)
		if err != nil {
			t.Fatalf("unixConns(%s): %v", path, err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("listener alone: %d connections, want 0", n)
	}
	// One waiting to be accepted, one accepted, one to the other socket.
	var conns []net.Conn
	for _, p := range []string{path, path, filepath.Join(dir, "other.sock")} {
		c, err := net.Dial("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if n := count(); n != 2 {
		t.Errorf("2 connections waiting: counted %d", n)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := count(); n != 2 {
		t.Errorf("1 accepted, 1 waiting: counted %d", n)
	}
}

// TestCountUnixConnsTable: the parsing of /proc/net/unix on a fixed
// table: the listener (flag __SO_ACCEPTCON) and the unconnected states
// are left out, and a path with spaces is matched whole.
func TestCountUnixConnsTable(t *testing.T) {
	table := `Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/a b.sock
0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/a b.sock
0000000000000000: 00000003 00000000 00000000 0001 02 102 /run/a b.sock
0000000000000000: 00000003 00000000 00000000 0001 04 103 /run/a b.sock
0000000000000000: 00000003 00000000 00000000 0001 03 104 /run/a
0000000000000000: 00000003 00000000 00000000 0001 03 105
`
	if n := countUnixConns(table, "/run/a b.sock"); n != 2 {
		t.Errorf("counted %d connections to /run/a b.sock, want 2", n)
	}
	if n := countUnixConns(table, "/run/a"); n != 1 {
		t.Errorf("counted %d connections to /run/a, want 1", n)
	}
}

// TestTCPConns: an established connection to a listening port counts
// once (its server side), whether accepted or not; the listener does not.
func TestTCPConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if n := tcpConns(port); n != 0 {
		t.Fatalf("listener alone on port %d: %d connections, want 0", port, n)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := tcpConns(port); n != 1 {
		t.Errorf("one connection to port %d: counted %d", port, n)
	}
}

// TestCountTCPConnsTable: the parsing of /proc/net/tcp6 on a fixed table:
// only established (01) entries whose local port matches.
func TestCountTCPConnsTable(t *testing.T) {
	table := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2A3D 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 0000000000000000FFFF00000100007F:2A3D 0000000000000000FFFF00000100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2
   2: 0000000000000000FFFF00000100007F:D2F0 0000000000000000FFFF00000100007F:2A3D 01 00000000:00000000 00:00000000 00000000     0        0 3
   3: 0000000000000000FFFF00000100007F:2A3D 0000000000000000FFFF00000100007F:D2F1 06 00000000:00000000 00:00000000 00000000     0        0 4
`
	if n := countTCPConns(table, 0x2A3D); n != 1 {
		t.Errorf("counted %d connections to port %d, want 1", n, 0x2A3D)
	}
}

// TestTailFrom: the last lines a log got from an offset on, indented;
// "(nothing)" when the run wrote nothing.
func TestTailFrom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "role.log")
	old := "old run: failed\n"
	if err := os.WriteFile(path, []byte(old+"a\nb\nc\nd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from int64
		n    int
		want string
	}{
		{0, 2, "  c\n  d"},
		{0, 10, "  old run: failed\n  a\n  b\n  c\n  d"},
		{int64(len(old)), 10, "  a\n  b\n  c\n  d"},
		{int64(len(old) + 8), 10, "  (nothing)"},
	} {
		if got := tailFrom(path, tc.from, tc.n); got != tc.want {
			t.Errorf("tailFrom(from %d, %d lines) = %q, want %q", tc.from, tc.n, got, tc.want)
		}
	}
	if got := tailFrom(filepath.Join(t.TempDir(), "none.log"), 0, 5); got != "" {
		t.Errorf("tailFrom of a missing file = %q, want \"\"", got)
	}
}

// TestRoleArgs: --role as one argument or two, each in order (a single
// role's program takes the last, archipelagod each).
func TestRoleArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"/usr/bin/filed", "--role", "blockerb", "--config", "/etc/a.conf"}, []string{"blockerb"}},
		{[]string{"filed", "--role=blockerm"}, []string{"blockerm"}},
		{[]string{"nulld", "--port", "7"}, nil},
		{[]string{"filed", "--role"}, nil},
		{[]string{"filed", "--role", "a", "--role=b"}, []string{"a", "b"}},
		{[]string{"archipelagod", "--config", "/c", "--role", "mapperd", "--role", "vlmcd", "--role=nbd"}, []string{"mapperd", "vlmcd", "nbd"}},
	} {
		if got := roleArgs(tc.args); !slices.Equal(got, tc.want) {
			t.Errorf("roleArgs(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
