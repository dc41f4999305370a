// Package metrics is the peers' optional Prometheus endpoint: the
// counters the peers keep (cheaply, with atomics, whether or not anyone
// scrapes them) and the collectors that turn them, and the segment's own
// counters, into Prometheus families at scrape time. The families and
// their meaning are listed in docs/metrics.md.
//
// The hot path is a Histogram.Observe and a few atomic adds: no lock, no
// allocation, no label lookup. Per-volume series live in a sync.Map
// looked up when a volume's state is made (Volumes.Get), and the
// collectors build the exposition only when scraped.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every family of the project.
const Namespace = "archipelago"

// Path is where the endpoint serves the exposition.
const Path = "/metrics"

// version is the build's version, set by the package build with
// -ldflags "-X github.com/archipelago-go/archipelago/internal/metrics.version=<git describe>".
var version string

// Version is the build's version: the one set at link time, else the main
// module's version from the build info, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Histogram counts durations in fixed buckets with atomics: Observe takes
// no lock and allocates nothing.
type Histogram struct {
	bounds []time.Duration // upper bounds, increasing; shared, read-only
	counts []atomic.Uint64 // per bucket (not cumulative); the last is +Inf
	sum    atomic.Int64    // nanoseconds
}

// NewHistogram returns a histogram with the upper bounds given.
func NewHistogram(bounds []time.Duration) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe counts one duration.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Count is the number of durations observed.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// metric turns h into a constant Prometheus histogram, in seconds.
func (h *Histogram) metric(d *prometheus.Desc, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.bounds))
	var n uint64
	for i, b := range h.bounds {
		n += h.counts[i].Load()
		buckets[b.Seconds()] = n
	}
	n += h.counts[len(h.bounds)].Load()
	return prometheus.MustNewConstHistogram(d, n, time.Duration(h.sum.Load()).Seconds(), buckets, labels...)
}

// IOBuckets are the bounds of the volume I/O latency histograms: 50 µs to
// 10 s.
var IOBuckets = []time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 10 * time.Second,
}

// WaitBuckets are the bounds of the lock wait histograms: 1 ms to 5 min.
var WaitBuckets = []time.Duration{
	time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	30 * time.Second, time.Minute, 5 * time.Minute,
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

var buildInfoDesc = desc("build_info", "Build of the program serving the endpoint: always 1, with its version and Go version as labels.", "version", "goversion")

// buildInfo is the archipelago_build_info gauge.
type buildInfo struct{}

func (buildInfo) Describe(ch chan<- *prometheus.Desc) { ch <- buildInfoDesc }
func (buildInfo) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, Version(), runtime.Version())
}

// Server is a running endpoint.
type Server struct {
	ln  net.Listener
	reg *prometheus.Registry
	srv *http.Server
	log *slog.Logger
}

// Listen binds addr (host:port) now, so that a bad or busy address fails
// the program at start; Serve starts answering.
func Listen(addr string, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint %s: %w", addr, err)
	}
	return &Server{ln: ln, reg: prometheus.NewRegistry(), log: log}, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve registers the build info, the Go runtime and process collectors
// and cs, and serves them at Path until Close.
func (s *Server) Serve(cs ...prometheus.Collector) error {
	cs = append([]prometheus.Collector{buildInfo{},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	for _, c := range cs {
		if err := s.reg.Register(c); err != nil {
			s.ln.Close()
			return fmt.Errorf("metrics endpoint %s: %w", s.ln.Addr(), err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics endpoint", "addr", s.ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("metrics endpoint", "url", "http://"+s.ln.Addr().String()+Path)
	return nil
}

// Close stops the endpoint.
func (s *Server) Close() error {
	if s.srv == nil {
		return s.ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
