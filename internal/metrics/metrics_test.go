package metrics

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func gather(t *testing.T, cs ...prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func labels(m *dto.Metric) string {
	var s []string
	for _, l := range m.GetLabel() {
		s = append(s, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(s, ",")
}

// TestVolumeCounters: Done counts ops, bytes of successful requests and
// errors per volume and op, and the latency in cumulative buckets, in
// seconds.
func TestVolumeCounters(t *testing.T) {
	var vs Volumes
	a := vs.Get("vol-a")
	if vs.Get("vol-a") != a {
		t.Fatal("Get made a second VolumeIO for the same volume")
	}
	a.Done(Read, 4096, 40*time.Microsecond, nil)
	a.Done(Read, 8192, 3*time.Millisecond, nil)
	a.Done(Write, 65536, 20*time.Second, nil)
	a.Done(Write, 512, time.Millisecond, errors.New("boom"))
	vs.Get("vol-b").Done(Write, 1, time.Microsecond, nil)
	fams := gather(t, &vs)
	want := map[string]float64{
		"archipelago_volume_ops_total{op=read,volume=vol-a}":     2,
		"archipelago_volume_ops_total{op=write,volume=vol-a}":    2,
		"archipelago_volume_bytes_total{op=read,volume=vol-a}":   12288,
		"archipelago_volume_bytes_total{op=write,volume=vol-a}":  65536,
		"archipelago_volume_errors_total{op=write,volume=vol-a}": 1,
		"archipelago_volume_errors_total{op=read,volume=vol-a}":  0,
		"archipelago_volume_ops_total{op=write,volume=vol-b}":    1,
		"archipelago_volume_bytes_total{op=write,volume=vol-b}":  1,
	}
	for k, v := range want {
		name, lbl, _ := strings.Cut(strings.TrimSuffix(k, "}"), "{")
		found := false
		for _, m := range fams[name].GetMetric() {
			if labels(m) == lbl {
				found = true
				if got := m.GetCounter().GetValue(); got != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
		}
		if !found {
			t.Errorf("%s missing", k)
		}
	}
	for _, m := range fams["archipelago_volume_op_duration_seconds"].GetMetric() {
		h := m.GetHistogram()
		switch labels(m) {
		case "op=read,volume=vol-a":
			// 40 µs in the first bucket (50 µs), 3 ms from the 5 ms one.
			if h.GetSampleCount() != 2 || h.GetBucket()[0].GetCumulativeCount() != 1 || h.GetBucket()[0].GetUpperBound() != 50e-6 {
				t.Errorf("read histogram: %v", h)
			}
			for _, b := range h.GetBucket() {
				if want := uint64(1 + map[bool]uint64{true: 1}[b.GetUpperBound() >= 0.005]); b.GetCumulativeCount() != want && b.GetUpperBound() >= 50e-6 {
					t.Errorf("read histogram: bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
			}
			if s := h.GetSampleSum(); s < 0.003039 || s > 0.003041 {
				t.Errorf("read histogram sum %v, want 0.00304", s)
			}
		case "op=write,volume=vol-a":
			// 20 s is beyond the last bound: counted, in no finite bucket.
			if h.GetSampleCount() != 2 || h.GetBucket()[len(h.GetBucket())-1].GetCumulativeCount() != 1 {
				t.Errorf("write histogram: %v", h)
			}
		}
	}
}

// TestLockWaits: Begin counts a wait and a waiter; its end observes the
// duration and counts a failure if the lock was not got.
func TestLockWaits(t *testing.T) {
	var lw LockWaits
	end := lw.Begin("v")
	fams := gather(t, &lw)
	if g := fams["archipelago_lock_waiters"].GetMetric()[0].GetGauge().GetValue(); g != 1 {
		t.Errorf("waiters %v while waiting, want 1", g)
	}
	if n := fams["archipelago_lock_wait_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n != 0 {
		t.Errorf("%d waits ended before any did", n)
	}
	end(nil)
	lw.Begin("v")(errors.New("gave up"))
	fams = gather(t, &lw)
	for name, want := range map[string]float64{"archipelago_lock_waits_total": 2, "archipelago_lock_wait_failures_total": 1} {
		if got := fams[name].GetMetric()[0].GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if g := fams["archipelago_lock_waiters"].GetMetric()[0].GetGauge().GetValue(); g != 0 {
		t.Errorf("waiters %v after the waits ended", g)
	}
	if n := fams["archipelago_lock_wait_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n != 2 {
		t.Errorf("%d waits observed, want 2", n)
	}
}

// TestServe: the endpoint serves the text format at /metrics with the
// build info and the Go runtime's families, and stops at Close.
func TestServe(t *testing.T) {
	s, err := Listen("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var vs Volumes
	vs.Get("v").Done(Write, 10, time.Millisecond, nil)
	if err := s.Serve(&vs); err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Addr().String() + Path
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	bi := fams["archipelago_build_info"]
	if bi == nil || len(bi.GetMetric()) != 1 || labels(bi.GetMetric()[0]) != "goversion="+runtime.Version()+",version="+Version() {
		t.Errorf("build info: %v", bi)
	}
	for _, name := range []string{"archipelago_volume_ops_total", "go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Errorf("%s still answers after Close", url)
	}
	if _, err := Listen(s.Addr().String()+"0", nil); err == nil || !strings.Contains(err.Error(), "metrics endpoint") {
		t.Errorf("Listen on a bad address: %v", err)
	}
}

// BenchmarkVolumeIODone is the composer's cost per I/O: one Done (and the
// clock read around it), from every processor at once on one volume.
func BenchmarkVolumeIODone(b *testing.B) {
	var vs Volumes
	v := vs.Get("bench")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			start := time.Now()
			v.Done(Write, 4096, time.Since(start), nil)
		}
	})
}
