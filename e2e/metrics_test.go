package e2e_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
)

// freeAddr is a loopback TCP address free when asked.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// families scrapes http://addr/metrics and parses it with the Prometheus
// text parser.
func families(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v\n%s", addr, resp.Status, err, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape %s: parse: %v\n%s", addr, err, body)
	}
	return fams
}

// sample finds the sample of family name whose labels include want
// (name=value pairs); nil if none.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's or gauge's value (0 if the sample is missing), or
// a histogram's sample count.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	m := sample(fams, name, labels...)
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// listening reports the TCP ports process pid listens on (from its
// sockets in /proc/<pid>/fd and the LISTEN entries of /proc/net/tcp{,6}).
func listening(t *testing.T, pid int) []int {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	if len(fds) == 0 {
		t.Fatalf("no fds of pid %d", pid)
	}
	var ports []int
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
				continue
			}
			if i := strings.LastIndexByte(fs[1], ':'); i >= 0 {
				p, _ := strconv.ParseUint(fs[1][i+1:], 16, 16)
				ports = append(ports, int(p))
			}
		}
	}
	return ports
}

// TestMetricsEndpoint: with metrics_listen set, vlmcd's endpoint counts
// the I/O done through a volume (operations and bytes per volume, a
// latency sample per operation), and shows the build, the segment's heap
// and request pool and the ports' queues; mapperd's endpoint answers too.
// Without the key (the blockers; vlmcd and mapperd of a second host in
// TestMetricsLockWaits) nothing listens.
func TestMetricsEndpoint(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	vaddr, maddr := freeAddr(t), freeAddr(t)
	e := e2etest.New(t, "host-a", fmt.Sprintf("[vlmcd]\nmetrics_listen = %s\n\n[mapperd]\nmetrics_listen = %s\n", vaddr, maddr))
	e.Start()
	const vol = "metered"
	e.Must("vlmc", "create", vol, "--size", "64M")
	before := families(t, vaddr)
	// 3 writes of 64 KiB, 2 reads of 64 KiB, on one NBD connection.
	if err := testutil.QemuIO(t, e.URI(vol), "write -P 7 0 64k", "write -P 8 1M 64k", "write -P 9 2M 64k", "read -P 7 0 64k", "read -P 8 1M 64k"); err != nil {
		t.Fatal(err)
	}
	after := families(t, vaddr)
	delta := func(name string, labels ...string) float64 {
		return value(after, name, labels...) - value(before, name, labels...)
	}
	for _, c := range []struct {
		name, op string
		atLeast  float64
		exactly  bool
	}{
		{"archipelago_volume_ops_total", "write", 3, true},
		{"archipelago_volume_bytes_total", "write", 3 * 65536, true},
		{"archipelago_volume_op_duration_seconds", "write", 3, true},
		// qemu-io may read a little more when it opens the image.
		{"archipelago_volume_ops_total", "read", 2, false},
		{"archipelago_volume_bytes_total", "read", 2 * 65536, false},
		{"archipelago_volume_op_duration_seconds", "read", 2, false},
		{"archipelago_volume_errors_total", "write", 0, true},
	} {
		d := delta(c.name, "volume", vol, "op", c.op)
		if d < c.atLeast || c.exactly && d != c.atLeast {
			t.Errorf("%s{volume=%q,op=%q} moved by %v, want %v%s", c.name, vol, c.op, d, c.atLeast, map[bool]string{false: " or more", true: ""}[c.exactly])
		}
	}
	if n, ops := value(after, "archipelago_volume_op_duration_seconds", "volume", vol, "op", "read"), value(after, "archipelago_volume_ops_total", "volume", vol, "op", "read"); n != ops {
		t.Errorf("read latency histogram counts %v requests, ops_total %v", n, ops)
	}
	for _, addr := range []string{vaddr, maddr} {
		fams := families(t, addr)
		if value(fams, "archipelago_build_info", "goversion", runtime.Version()) != 1 {
			t.Errorf("%s: no archipelago_build_info{goversion=%q} 1: %v", addr, runtime.Version(), fams["archipelago_build_info"])
		}
	}
	for _, g := range []string{"archipelago_segment_heap_size_bytes", "archipelago_segment_request_pool_size"} {
		if value(after, g) <= 0 {
			t.Errorf("%s: %v, want > 0", g, value(after, g))
		}
	}
	if sample(after, "archipelago_segment_heap_used_bytes") == nil || sample(after, "archipelago_segment_request_pool_used") == nil {
		t.Errorf("segment heap or pool use missing")
	}
	port := strconv.Itoa(e.Cfg.RolesOfType("vlmcd")[0].PortStart)
	for _, g := range []string{"archipelago_port_requests_in_flight", "archipelago_port_requests_queued", "archipelago_port_up"} {
		if sample(after, g, "port", port, "role", "vlmcd") == nil {
			t.Errorf("%s{port=%q,role=\"vlmcd\"} missing", g, port)
		}
	}
	if d := delta("archipelago_port_requests_served_total", "port", port, "role", "vlmcd"); d < 5 {
		t.Errorf("vlmcd's port served %v requests during the I/O, want 5 or more", d)
	}
	// The endpoint is vlmcd's own socket (and shows that listening sees
	// one); the blockers, without the key, listen on nothing. Hosted,
	// their process listens on the endpoints of the roles hosted with
	// them, and only those.
	endpoints := func(role string) []int {
		ports := []int{}
		for _, n := range e.SameProcess(role) {
			if r, _ := e.Cfg.Role(n); r.MetricsListen != "" {
				_, p, _ := net.SplitHostPort(r.MetricsListen)
				ports = append(ports, atoi(p))
			}
		}
		slices.Sort(ports)
		return ports
	}
	for _, r := range e.Cfg.Roles {
		if r.IsBlocker() || r.Name == "vlmcd" {
			ports := listening(t, peer.ReadPidfile(e.Cfg.PidFile(r.Name)).PID)
			if slices.Sort(ports); !slices.Equal(ports, endpoints(r.Name)) {
				t.Errorf("%s (metrics_listen %q) listens on TCP ports %v, want %v", r.Name, r.MetricsListen, ports, endpoints(r.Name))
			}
		}
	}
}

// TestMetricsLockWaits: a write on host B that waits for the volume's lock
// held by host A shows on B's mapperd endpoint as a wait going on, then as
// one wait that ended, with its duration; A, without metrics_listen,
// listens on nothing.
func TestMetricsLockWaits(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, e2etest.Options{})
	maddr := freeAddr(t)
	cf, err := os.OpenFile(b.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(cf, "\n[mapperd]\nmetrics_listen = %s\n", maddr)
		cf.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	b.Start()
	for _, r := range []string{"vlmcd", "mapperd"} {
		if ports := listening(t, peer.ReadPidfile(a.Cfg.PidFile(r)).PID); len(ports) != 0 {
			t.Errorf("host A's %s, without metrics_listen, listens on TCP ports %v", r, ports)
		}
	}
	const vol = "contended"
	a.Must("vlmc", "create", vol, "--size", "64M")
	a.Must("vlmc", "open", vol)
	done := make(chan error, 1)
	go func() { done <- testutil.QemuIO(t, b.URI(vol), "write -P 2 0 64k") }()
	testutil.WaitFor(t, 30*time.Second, "B's write to wait for A's lock", func() bool {
		return value(families(t, maddr), "archipelago_lock_waiters", "volume", vol) == 1
	})
	if f := families(t, maddr); value(f, "archipelago_lock_waits_total", "volume", vol) != 1 || value(f, "archipelago_lock_wait_duration_seconds", "volume", vol) != 0 {
		t.Errorf("while waiting: waits_total %v, ended waits %v; want 1, 0",
			value(f, "archipelago_lock_waits_total", "volume", vol), value(f, "archipelago_lock_wait_duration_seconds", "volume", vol))
	}
	a.Must("vlmc", "close", vol)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("B's waiting write: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("B's write still waits after A closed")
	}
	f := families(t, maddr)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"archipelago_lock_waits_total", 1},
		{"archipelago_lock_waiters", 0},
		{"archipelago_lock_wait_failures_total", 0},
		{"archipelago_lock_wait_duration_seconds", 1},
	} {
		if got := value(f, c.name, "volume", vol); got != c.want {
			t.Errorf("%s{volume=%q} = %v, want %v", c.name, vol, got, c.want)
		}
	}
	if h := sample(f, "archipelago_lock_wait_duration_seconds", "volume", vol); h == nil || h.Histogram.GetSampleSum() <= 0 {
		t.Errorf("lock wait duration: %v", h)
	}
}
