package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Op indexes the per-operation counters of a volume.
const (
	Read  = 0
	Write = 1
)

var opLabel = [2]string{Read: "read", Write: "write"}

// VolumeIO is one volume's I/O as the composer served it.
type VolumeIO struct {
	ops, bytes, errors [2]atomic.Uint64
	latency            [2]*Histogram
}

// Done counts one READ (op Read) or WRITE (op Write) served in d: n bytes
// moved, or err.
func (v *VolumeIO) Done(op int, n uint64, d time.Duration, err error) {
	v.ops[op].Add(1)
	if err != nil {
		v.errors[op].Add(1)
	} else {
		v.bytes[op].Add(n)
	}
	v.latency[op].Observe(d)
}

// Volumes holds the VolumeIO of every volume the composer has served
// since it started, by name.
type Volumes struct {
	m sync.Map // name -> *VolumeIO
}

// Get returns volume name's counters, made on first use. It takes no lock
// once they exist.
func (vs *Volumes) Get(name string) *VolumeIO {
	if v, ok := vs.m.Load(name); ok {
		return v.(*VolumeIO)
	}
	v := &VolumeIO{latency: [2]*Histogram{NewHistogram(IOBuckets), NewHistogram(IOBuckets)}}
	got, _ := vs.m.LoadOrStore(name, v)
	return got.(*VolumeIO)
}

var (
	volOpsDesc     = desc("volume_ops_total", "Volume READ and WRITE requests the composer (vlmcd) answered, failed ones included.", "volume", "op")
	volBytesDesc   = desc("volume_bytes_total", "Bytes read from or written to the volume by the requests that succeeded.", "volume", "op")
	volErrorsDesc  = desc("volume_errors_total", "Volume READ and WRITE requests that failed.", "volume", "op")
	volLatencyDesc = desc("volume_op_duration_seconds", "Time from the composer taking a READ or WRITE to its answer (mapping, object I/O).", "volume", "op")
)

// Describe implements prometheus.Collector.
func (vs *Volumes) Describe(ch chan<- *prometheus.Desc) {
	ch <- volOpsDesc
	ch <- volBytesDesc
	ch <- volErrorsDesc
	ch <- volLatencyDesc
}

// Collect implements prometheus.Collector.
func (vs *Volumes) Collect(ch chan<- prometheus.Metric) {
	vs.m.Range(func(k, val any) bool {
		name, v := k.(string), val.(*VolumeIO)
		for op, l := range opLabel {
			ch <- prometheus.MustNewConstMetric(volOpsDesc, prometheus.CounterValue, float64(v.ops[op].Load()), name, l)
			ch <- prometheus.MustNewConstMetric(volBytesDesc, prometheus.CounterValue, float64(v.bytes[op].Load()), name, l)
			ch <- prometheus.MustNewConstMetric(volErrorsDesc, prometheus.CounterValue, float64(v.errors[op].Load()), name, l)
			ch <- v.latency[op].metric(volLatencyDesc, name, l)
		}
		return true
	})
}

// LockWaits counts, per volume, the writes (MAPW, TRIM) the mapper made
// wait because another host held the volume's lock.
type LockWaits struct {
	m sync.Map // name -> *lockWait
}

type lockWait struct {
	waits   atomic.Uint64
	waiting atomic.Int64
	failed  atomic.Uint64
	wait    *Histogram
}

func (lw *LockWaits) get(name string) *lockWait {
	if v, ok := lw.m.Load(name); ok {
		return v.(*lockWait)
	}
	got, _ := lw.m.LoadOrStore(name, &lockWait{wait: NewHistogram(WaitBuckets)})
	return got.(*lockWait)
}

// Begin counts a wait for volume name's lock that starts now; the
// function it returns ends it, err saying whether the lock was got.
// It fits volume.Options.OnLockWait.
func (lw *LockWaits) Begin(name string) func(err error) {
	w := lw.get(name)
	w.waits.Add(1)
	w.waiting.Add(1)
	start := time.Now()
	return func(err error) {
		w.wait.Observe(time.Since(start))
		if err != nil {
			w.failed.Add(1)
		}
		w.waiting.Add(-1)
	}
}

var (
	lockWaitsDesc   = desc("lock_waits_total", "Writes (MAPW, TRIM) that found the volume locked by another host and waited for its lock.", "volume")
	lockWaitingDesc = desc("lock_waiters", "Writes waiting now for the volume's lock held by another host.", "volume")
	lockFailedDesc  = desc("lock_wait_failures_total", "Waits for the volume's lock that ended without it (the request gave up or failed).", "volume")
	lockWaitDesc    = desc("lock_wait_duration_seconds", "How long the waits for the volume's lock that ended took.", "volume")
)

// Describe implements prometheus.Collector.
func (lw *LockWaits) Describe(ch chan<- *prometheus.Desc) {
	ch <- lockWaitsDesc
	ch <- lockWaitingDesc
	ch <- lockFailedDesc
	ch <- lockWaitDesc
}

// Collect implements prometheus.Collector.
func (lw *LockWaits) Collect(ch chan<- prometheus.Metric) {
	lw.m.Range(func(k, val any) bool {
		name, w := k.(string), val.(*lockWait)
		ch <- prometheus.MustNewConstMetric(lockWaitsDesc, prometheus.CounterValue, float64(w.waits.Load()), name)
		ch <- prometheus.MustNewConstMetric(lockWaitingDesc, prometheus.GaugeValue, float64(w.waiting.Load()), name)
		ch <- prometheus.MustNewConstMetric(lockFailedDesc, prometheus.CounterValue, float64(w.failed.Load()), name)
		ch <- w.wait.metric(lockWaitDesc, name)
		return true
	})
}
