package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archipelago-go/archipelago/xseg"
)

// Segment collects the segment-wide facts (buffer heap, request pool,
// repairs) and, per bound port, the queue depths and counters that
// `xseg info` shows. It reads them from the segment at scrape time; one
// peer per host serves it (vlmcd), so that no fact is exposed twice.
type Segment struct {
	Seg *xseg.Segment
}

var (
	segHeapSizeDesc  = desc("segment_heap_size_bytes", "Size of the segment's buffer heap.")
	segHeapUsedDesc  = desc("segment_heap_used_bytes", "Bytes of the segment's buffer heap allocated to requests.")
	segPoolSizeDesc  = desc("segment_request_pool_size", "Requests in the segment's pool.")
	segPoolUsedDesc  = desc("segment_request_pool_used", "Requests of the pool in use (allocated, queued, served or answered).")
	segRepairsDesc   = desc("segment_repairs_total", "Segment structures rebuilt after their lock holder died.")
	segReclaimedDesc = desc("segment_reclaimed_requests_total", "Requests reclaimed from processes that died holding them.")

	portUpDesc        = desc("port_up", "1 if the port's owner (a peer or tool) is alive, 0 if it died bound.", "port", "role")
	portQueuedDesc    = desc("port_requests_queued", "Requests queued at the port, not yet accepted by its owner.", "port", "role")
	portInFlightDesc  = desc("port_requests_in_flight", "Requests the port's owner accepted and has not answered.", "port", "role")
	portRepliesDesc   = desc("port_replies_queued", "Replies queued at the port, not yet received by its owner.", "port", "role")
	portSubmittedDesc = desc("port_requests_submitted_total", "Requests queued to the port since the segment was made.", "port", "role")
	portServedDesc    = desc("port_requests_served_total", "Requests the port's owners answered since the segment was made.", "port", "role")
	portFailedDesc    = desc("port_requests_failed_total", "Requests the port's owners answered with an error since the segment was made.", "port", "role")
)

// Describe implements prometheus.Collector.
func (s Segment) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{segHeapSizeDesc, segHeapUsedDesc, segPoolSizeDesc, segPoolUsedDesc, segRepairsDesc, segReclaimedDesc,
		portUpDesc, portQueuedDesc, portInFlightDesc, portRepliesDesc, portSubmittedDesc, portServedDesc, portFailedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s Segment) Collect(ch chan<- prometheus.Metric) {
	in := s.Seg.Info()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	port := func(ps xseg.PortStat, l ...string) {
		gauge(portQueuedDesc, float64(ps.Queued), l...)
		gauge(portInFlightDesc, float64(ps.InFlight), l...)
		gauge(portRepliesDesc, float64(ps.Replies), l...)
		counter(portSubmittedDesc, float64(ps.Submitted), l...)
		counter(portServedDesc, float64(ps.Served), l...)
		counter(portFailedDesc, float64(ps.Failed), l...)
	}
	gauge(segHeapSizeDesc, float64(in.HeapBytes))
	gauge(segHeapUsedDesc, float64(in.HeapUsed))
	gauge(segPoolSizeDesc, float64(in.Requests))
	gauge(segPoolUsedDesc, float64(in.Requests-in.FreeRequests))
	counter(segRepairsDesc, float64(in.Repairs))
	counter(segReclaimedDesc, float64(in.Reclaimed))
	// Static ports one by one; the dynamic ports of tools, which come and
	// go, summed into one series (port "dynamic").
	var dyn xseg.PortStat
	for no := 0; no < in.Ports; no++ {
		ps, err := s.Seg.PortStat(no)
		if err != nil || ps.PID == 0 && ps.Queued == 0 && ps.Replies == 0 && ps.InFlight == 0 && no < in.DynPorts {
			continue
		}
		if no >= in.DynPorts {
			dyn.Queued += ps.Queued
			dyn.InFlight += ps.InFlight
			dyn.Replies += ps.Replies
			dyn.Submitted += ps.Submitted
			dyn.Served += ps.Served
			dyn.Failed += ps.Failed
			continue
		}
		up := 0.0
		if ps.PID != 0 && ps.Alive {
			up = 1
		}
		gauge(portUpDesc, up, strconv.Itoa(no), ps.Name)
		port(ps, strconv.Itoa(no), ps.Name)
	}
	port(dyn, "dynamic", "")
}
