package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
)

// newEnv writes a configuration of the test's own (file blockers, mapperd,
// vlmcd, nbd; extra INI text appended) and creates its segment and
// RUN_DIR, as archipelago start does before it runs the peers.
func newEnv(t *testing.T, extra string) *e2etest.Env {
	t.Helper()
	e := e2etest.New(t, "host-a", extra)
	x := e.Cfg.XSEG
	seg, err := xseg.Create(xseg.Config{Name: x.Name, SizeMiB: x.SizeMiB, Ports: x.Ports, DynPorts: x.DynPorts})
	if err != nil {
		t.Fatal(err)
	}
	seg.Close() // e2etest destroys it at cleanup
	if err := os.MkdirAll(e.Cfg.RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// roleArgs are --role NAME for every role of cfg, in its start order.
func roleArgs(cfg *config.Config) []string {
	var args []string
	for _, r := range cfg.Roles {
		args = append(args, "--role", r.Name)
	}
	return args
}

// pidOf returns the pid a pidfile holds, 0 if it holds none (yet).
func pidOf(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// startHost runs archipelagod with every role of e and waits until each
// role's pidfile holds its pid.
func startHost(t *testing.T, e *e2etest.Env) *testbin.Proc {
	t.Helper()
	p := testbin.Start(t, "archipelagod", append([]string{"--config", e.Config}, roleArgs(e.Cfg)...)...)
	pid := p.Cmd.Process.Pid
	for _, r := range e.Cfg.Roles {
		testutil.WaitFor(t, 30*time.Second, r.Name+"'s pidfile to name the host", func() bool {
			if p.Exited() {
				t.Fatalf("archipelagod exited: %v\n%s", p.Wait(0), p.Output())
			}
			return pidOf(e.Cfg.PidFile(r.Name)) == pid
		})
	}
	return p
}

// TestHostRunsTheStack: one archipelagod runs a whole file stack (two
// blockers, mapperd, vlmcd, nbd). Every role's pidfile holds its pid and
// its log lines name the role; a volume created through vlmcd is written
// and read back over NBD. After a SIGKILL of the host a second host starts
// on the same segment and reads the data back; at SIGTERM it stops every
// role, removes their pidfiles and the socket, and exits 0.
func TestHostRunsTheStack(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	e := newEnv(t, "")
	h := startHost(t, e)

	vc, err := volclient.DialConfig(e.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vc.Create(ctx, "vol", 8<<20); err != nil {
		t.Fatal(err)
	}
	vc.Disconnect()
	uri := nbduri.URI(e.Socket(), "vol")
	if err := testutil.QemuIO(t, uri, "write -P 0x5a 0 1M", "write -P 0xa5 4M 64k", "flush"); err != nil {
		t.Fatal(err)
	}
	if err := testutil.QemuIO(t, uri, "read -P 0x5a 0 1M", "read -P 0xa5 4M 64k", "read -P 0 1M 3M"); err != nil {
		t.Fatal(err)
	}
	out := h.Output()
	for _, r := range e.Cfg.Roles {
		if !strings.Contains(out, "role="+r.Name) {
			t.Errorf("no log line names role %s:\n%s", r.Name, out)
		}
	}

	// SIGKILL: the segment stays usable, the data is there.
	h.Kill()
	h = startHost(t, e)
	if err := testutil.QemuIO(t, uri, "read -P 0x5a 0 1M", "read -P 0xa5 4M 64k"); err != nil {
		t.Fatal(err)
	}

	if err := h.Stop(60 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, h.Output())
	}
	for _, r := range e.Cfg.Roles {
		if _, err := os.Stat(e.Cfg.PidFile(r.Name)); !os.IsNotExist(err) {
			t.Errorf("after SIGTERM the pidfile of %s is still there (%v)", r.Name, err)
		}
	}
	if _, err := os.Stat(e.Socket()); !os.IsNotExist(err) {
		t.Errorf("after SIGTERM the NBD socket is still there (%v)", err)
	}
	// Stopped in the reverse order of the start.
	out = h.Output()
	last := -1
	for i := len(e.Cfg.Roles) - 1; i >= 0; i-- {
		n := e.Cfg.Roles[i].Name
		at := strings.Index(out, "msg=\"role stopped\" role="+n)
		if at < 0 || at < last {
			t.Errorf("role %s stopped at %d of the output, the one started after it at %d:\n%s", n, at, last, out)
		}
		last = at
	}
}

// TestHostStartFailure: a role that fails to start (nbd: its TCP address
// is taken) makes the host stop the roles started before it (their
// pidfiles go) and exit 1 with an error naming the role.
func TestHostStartFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := newEnv(t, fmt.Sprintf("[nbd]\nlisten = %s\n", l.Addr()))
	h := testbin.Start(t, "archipelagod", "--config", e.Config, "--role", "blockerb", "--role", "blockerm", "--role", "nbd")
	err = h.Wait(60 * time.Second)
	out := h.Output()
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("archipelagod with a role that cannot start: %v\n%s", err, out)
	}
	if !strings.Contains(out, "role nbd (nbdd) failed to start") || !strings.Contains(out, l.Addr().String()) {
		t.Errorf("the error does not name the role and its address:\n%s", out)
	}
	for _, n := range []string{"blockerb", "blockerm"} {
		if !strings.Contains(out, `msg="role stopped" role=`+n) {
			t.Errorf("%s was not stopped:\n%s", n, out)
		}
		if _, err := os.Stat(e.Cfg.PidFile(n)); !os.IsNotExist(err) {
			t.Errorf("the pidfile of %s is still there (%v)", n, err)
		}
	}
}

// TestHostBadRole: a role the configuration does not have, or one given
// twice, fails before anything starts, naming it.
func TestHostBadRole(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--role", "blockerb", "--role", "nope"}, `role "nope": no such role in ` + e.Config + ` (its roles: blockerb, blockerm, mapperd, vlmcd, nbd)`},
		{[]string{"--role", "blockerb", "--role", "blockerb"}, `role "blockerb" given twice`},
		{nil, "no --role given"},
	} {
		h := testbin.Start(t, "archipelagod", append([]string{"--config", e.Config}, c.args...)...)
		err := h.Wait(30 * time.Second)
		out := h.Output()
		if err == nil || !bytes.Contains([]byte(out), []byte(c.want)) {
			t.Errorf("archipelagod %v: %v, wanted an error with %q:\n%s", c.args, err, c.want, out)
		}
		if strings.Contains(out, "starting role") {
			t.Errorf("archipelagod %v started a role:\n%s", c.args, out)
		}
	}
}

// TestHostWithoutCephRunsCephHost: an archipelagod built without the ceph
// tag, asked to host a rados_blocker role, runs the one built with it
// (cephHost) in its place, with the same pid and arguments.
func TestHostWithoutCephRunsCephHost(t *testing.T) {
	if strings.Contains(os.Getenv("ARCHIPELAGO_BUILD_TAGS"), "ceph") {
		t.Skip("testbin builds archipelagod with the ceph tag: it runs radosd's roles itself")
	}
	e := e2etest.NewWith(t, e2etest.Options{HostID: "host-a", CephConf: "/nonexistent/ceph.conf", Pool: "p", Namespace: "ns"})
	stand := filepath.Join(t.TempDir(), "archipelagod")
	if err := os.WriteFile(stand, []byte("#!/bin/sh\necho \"ceph host pid $$: $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARCHIPELAGO_CEPH_HOST", stand)
	args := []string{"--config", e.Config, "--role", "mapperd", "--role", "blockerb"}
	h := testbin.Start(t, "archipelagod", args...)
	if err := h.Wait(30 * time.Second); err != nil {
		t.Fatalf("%v\n%s", err, h.Output())
	}
	want := fmt.Sprintf("ceph host pid %d: %s\n", h.Cmd.Process.Pid, strings.Join(args, " "))
	if h.Output() != want {
		t.Errorf("output %q, want %q", h.Output(), want)
	}
	// Not installed: the error names the role and what would run it.
	t.Setenv("ARCHIPELAGO_CEPH_HOST", filepath.Join(t.TempDir(), "none"))
	h = testbin.Start(t, "archipelagod", args...)
	if err := h.Wait(30 * time.Second); err == nil || !strings.Contains(h.Output(), `role "blockerb": type rados_blocker cannot run in archipelagod as built`) {
		t.Errorf("without a ceph host: %v\n%s", err, h.Output())
	}
}

// TestHostInProcess runs host itself in the test process with every role
// of a file stack (so that -race sees the roles side by side: the peers,
// the mapper's reaper of sessions, nbdd's connections, their stop in
// reverse), writes and reads a volume over NBD in a session, and ends the
// host's context: every role stops and removes its pidfile and socket.
// vlmcd and mapperd each serve their own metrics (their families, not the
// other's, on their own endpoint: nothing registers globally).
func TestHostInProcess(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	mAddr, vAddr := freeAddr(t), freeAddr(t)
	e := newEnv(t, fmt.Sprintf("[mapperd]\nmetrics_listen = %s\n[vlmcd]\nmetrics_listen = %s\n", mAddr, vAddr))
	var names []string
	for _, r := range e.Cfg.Roles {
		names = append(names, r.Name)
	}
	hs, err := plan(e.Cfg, e.Config, names)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testutil.Buffer{}
	done := make(chan error, 1)
	go func() { done <- host(ctx, slog.New(slog.NewTextHandler(&log, nil)), hs) }()
	for _, r := range e.Cfg.Roles {
		testutil.WaitFor(t, 30*time.Second, r.Name+"'s pidfile", func() bool {
			return pidOf(e.Cfg.PidFile(r.Name)) == os.Getpid()
		})
	}
	vc, err := volclient.DialConfig(e.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if err := vc.Create(cctx, "vol", 4<<20); err != nil {
		t.Fatal(err)
	}
	vc.Disconnect()
	uri := nbduri.URI(e.Socket(), "vol")
	if err := testutil.QemuIO(t, uri, "write -P 0x3c 64k 256k", "flush", "read -P 0x3c 64k 256k", "read -P 0 0 64k"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		role, addr, has, hasNot string
	}{
		{"vlmcd", vAddr, `archipelago_volume_ops_total{op="write",volume="vol"}`, "archipelago_lock_wait"},
		// Its lock waits have no series before a wait.
		{"mapperd", mAddr, "archipelago_build_info", "archipelago_volume_ops_total"},
		{"mapperd", mAddr, "archipelago_build_info", "archipelago_segment_heap_size_bytes"},
	} {
		resp, err := http.Get("http://" + c.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), c.has) || strings.Contains(string(b), c.hasNot) {
			t.Errorf("%s's metrics: want %s, not %s:\n%s", c.role, c.has, c.hasNot, b)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("host did not stop:\n%s", log.String())
	}
	for _, r := range e.Cfg.Roles {
		if _, err := os.Stat(e.Cfg.PidFile(r.Name)); !os.IsNotExist(err) {
			t.Errorf("the pidfile of %s is still there (%v)", r.Name, err)
		}
	}
	if _, err := os.Stat(e.Socket()); !os.IsNotExist(err) {
		t.Errorf("the NBD socket is still there (%v)", err)
	}
}

// TestHostCPUProfile: the host writes one CPU profile for its roles, at
// --cpuprofile or $ARCHIPELAGO_HOST_CPUPROFILE (archipelago start gives
// it the roles alone), complete once it stopped.
func TestHostCPUProfile(t *testing.T) {
	e := newEnv(t, "")
	for _, viaEnv := range []bool{false, true} {
		prof := filepath.Join(t.TempDir(), "cpu.pprof")
		args := []string{"--config", e.Config, "--role", "blockerb"}
		if viaEnv {
			t.Setenv(envCPUProfile, prof)
		} else {
			args = append(args, "--cpuprofile", prof)
		}
		h := testbin.Start(t, "archipelagod", args...)
		testutil.WaitFor(t, 30*time.Second, "blockerb's pidfile", func() bool {
			return pidOf(e.Cfg.PidFile("blockerb")) == h.Cmd.Process.Pid
		})
		if err := h.Stop(30 * time.Second); err != nil {
			t.Fatalf("%v\n%s", err, h.Output())
		}
		b, err := os.ReadFile(prof)
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("env %v: the profile (gzipped pprof) reads %d bytes, %v", viaEnv, len(b), err)
		}
	}
}

// freeAddr returns a TCP address of the loopback free a moment ago.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
