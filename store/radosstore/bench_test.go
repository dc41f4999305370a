//go:build ceph

package radosstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// The layers of the RADOS path, 4 KiB random writes and reads on 64
// objects of 4 MiB, 16 in flight (as scripts/bench-rados.sh and rbd bench)
// and one at a time (where latency decides):
//
//	go test -tags ceph -run XXX -bench Layers -benchtime 20000x ./store/radosstore/
//
// "aio" is librados' aio straight from Go (the floor of radosd), "sync"
// the synchronous calls from 16 goroutines, "radosd" the same through the
// segment to a radosd process. Each reports IOPS and the CPU time per I/O
// (cpu-µs/op) of the process that talks to librados (the test's own for
// aio and sync, radosd's for radosd: every thread, librados' included);
// ns/op at depth 1 is the latency. ARCHIPELAGO_BENCH_PERF runs perf on
// radosd for the whole benchmark, with its value as the arguments before
// -p PID: "record -g -o FILE", "stat -e context-switches -o FILE". The
// environment reaches radosd: run it with and without
// ARCHIPELAGO_RADOS_DIRECT_WAIT=1 to compare the completion paths.
func BenchmarkLayers(b *testing.B) {
	o := cluster(b)
	o.Namespace = namespace(b, o)
	parent := b
	direct, err := radosstore.Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { direct.Close() })
	var direct0 store.Store = direct
	const objects, objSize, size = 64, 4 << 20, 4096
	buf := make([]byte, objSize)
	for i := range objects {
		if err := direct.WriteAt(b.Context(), obj(i), buf, 0, false); err != nil {
			b.Fatal(err)
		}
	}
	if os.Getenv("ARCHIPELAGO_BUILD_TAGS") == "" {
		os.Setenv("ARCHIPELAGO_BUILD_TAGS", "ceph")
	}
	open := testbin.BlockerStores(b, "radosdbench", "radosd", func(testing.TB) []string {
		args := []string{"--pool", o.Pool, "--ceph-conf", o.CephConf, "--namespace", o.Namespace, "--nr-threads", "16"}
		if o.CephxID != "" {
			args = append(args, "--cephx-id", o.CephxID)
		}
		return args
	})
	var viaSeg store.Store // started by the first radosd sub-benchmark
	var radosd int         // its pid
	for _, c := range []struct {
		write bool
		depth int
	}{{true, 16}, {false, 16}, {true, 1}, {false, 1}} {
		write, depth := c.write, c.depth
		op := fmt.Sprintf("read/depth%d", depth)
		if write {
			op = fmt.Sprintf("write/depth%d", depth)
		}
		b.Run("aio/"+op, func(b *testing.B) {
			bufs := make([][]byte, depth)
			for i := range bufs {
				bufs[i] = pinnedBuf(b, size)
			}
			sem := make(chan int, depth)
			for i := range depth {
				sem <- i
			}
			var wg sync.WaitGroup
			cpu := startCPU(b, os.Getpid())
			start := time.Now()
			for range b.N {
				slot := <-sem
				wg.Add(1)
				name, off := obj(rand.IntN(objects)), int64(rand.IntN(objSize/size))*size
				var err error
				if write {
					err = direct.WriteAsync(name, bufs[slot], off, func(err error) {
						if err != nil {
							b.Error(err)
						}
						sem <- slot
						wg.Done()
					})
				} else {
					err = direct.ReadAsync(name, bufs[slot], off, func(_ int, err error) {
						if err != nil {
							b.Error(err)
						}
						sem <- slot
						wg.Done()
					})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
			cpu.report(b)
		})
		for _, l := range []struct {
			name string
			st   *store.Store
		}{{"sync", &direct0}, {"radosd", &viaSeg}} {
			b.Run(l.name+"/"+op, func(b *testing.B) {
				if *l.st == nil {
					*l.st = open(parent) // lives as long as the whole benchmark
					radosd = childNamed(parent, "radosd")
					perfRecord(parent, radosd)
				}
				st := *l.st
				pid := os.Getpid()
				if l.name == "radosd" {
					pid = radosd
				}
				cpu := startCPU(b, pid)
				var wg sync.WaitGroup
				work := make(chan struct{}, depth)
				start := time.Now()
				for range depth {
					wg.Add(1)
					go func() {
						defer wg.Done()
						p := make([]byte, size)
						for range work {
							name, off := obj(rand.IntN(objects)), int64(rand.IntN(objSize/size))*size
							var err error
							if write {
								err = st.WriteAt(b.Context(), name, p, off, false)
							} else {
								_, err = st.ReadAt(b.Context(), name, p, off)
							}
							if err != nil {
								b.Error(err) // and go on taking work: the sender must not block
							}
						}
					}()
				}
				for range b.N {
					work <- struct{}{}
				}
				close(work)
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
				cpu.report(b)
			})
		}
	}
}

func obj(i int) string { return fmt.Sprintf("bench_%04d", i) }

// pinnedBuf returns Go memory librados may keep using after the call
// that started an operation returns (the cgo rules want it pinned).
func pinnedBuf(b *testing.B, n int) []byte {
	p := make([]byte, n)
	var pin runtime.Pinner
	pin.Pin(&p[0])
	b.Cleanup(pin.Unpin)
	return p
}

// cpuClock is the CPU time (user and system, all threads) and the
// context switches of a process at the start of a benchmark.
type cpuClock struct {
	pid           int
	ticks, ctxsws int64
}

func startCPU(b *testing.B, pid int) cpuClock {
	return cpuClock{pid, cpuTicks(b, pid), ctxSwitches(pid)}
}

// report adds cpu-µs/op, the process's CPU time since startCPU per op,
// and ctxsw/op, its threads' context switches per op (a thread gone
// meanwhile takes its count along).
func (c cpuClock) report(b *testing.B) {
	// /proc counts in USER_HZ, 100 on Linux.
	us := float64(cpuTicks(b, c.pid)-c.ticks) * 1e4
	b.ReportMetric(us/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(ctxSwitches(c.pid)-c.ctxsws)/float64(b.N), "ctxsw/op")
}

// ctxSwitches sums the context switches of pid's threads.
func ctxSwitches(pid int) int64 {
	ts, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, t := range ts {
		s, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(s), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				i, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += i
			}
		}
	}
	return n
}

func cpuTicks(b testing.TB, pid int) int64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses:
	// utime and stime are the 14th and 15th of the line.
	f := strings.Fields(string(s[bytes.LastIndexByte(s, ')')+2:]))
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	t, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	return u + t
}

// childNamed returns the pid of the test's child process running prog.
func childNamed(b testing.TB, prog string) int {
	ds, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range ds {
		s, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(s, ')')
		f := strings.Fields(string(s[i+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() && strings.HasSuffix(string(s[:i]), "("+prog) {
			pid, _ := strconv.Atoi(strings.Fields(string(s))[0])
			return pid
		}
	}
	b.Fatalf("no child process %s", prog)
	return 0
}

// perfRecord runs perf on pid until b ends, if ARCHIPELAGO_BENCH_PERF
// says with what arguments.
func perfRecord(b testing.TB, pid int) {
	args := strings.Fields(os.Getenv("ARCHIPELAGO_BENCH_PERF"))
	if len(args) == 0 {
		return
	}
	cmd := exec.Command("perf", append(args, "-p", strconv.Itoa(pid))...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
}
