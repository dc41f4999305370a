package peer_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/loadgen"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// The socket baseline: a process that echoes fixed 64-byte messages (the
// size of a request's descriptor) on a Unix-domain socket, one goroutine
// per connection.
const (
	echoEnv = "ARCHIPELAGO_SOCKECHO"
	msgSize = 64
)

func TestMain(m *testing.M) {
	if path := os.Getenv(echoEnv); path != "" {
		sockEcho(path)
		return
	}
	os.Exit(m.Run())
}

func sockEcho(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var m [msgSize]byte
			for {
				if _, err := io.ReadFull(c, m[:]); err != nil {
					return
				}
				binary.BigEndian.PutUint64(m[8:], 1) // "served"
				if _, err := c.Write(m[:]); err != nil {
					return
				}
			}
		}()
	}
}

func startSockEcho(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "echo.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), echoEnv+"="+path)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(b, 10*time.Second, "echo socket", func() bool { _, err := os.Stat(path); return err == nil })
	return path
}

// sockLoad runs n round trips over the socket from depth connections.
func sockLoad(b *testing.B, path string, depth, n int) (rate float64, median time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < depth; g++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func(share int) {
			defer wg.Done()
			defer c.Close()
			var m [msgSize]byte
			mine := make([]time.Duration, 0, share)
			for i := 0; i < share; i++ {
				t0 := time.Now()
				binary.BigEndian.PutUint64(m[:], uint64(i))
				if _, err := c.Write(m[:]); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, m[:]); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}((n + depth - 1) / depth)
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	return float64(len(lat)) / el.Seconds(), lat[len(lat)/2]
}

// BenchmarkRoundTrip measures a request round trip between two processes
// through the segment (to the null peer) and, in the same run, through a
// Unix-domain socket echo server, at queue depths 1 and 32, and reports
// both rates, medians and their ratio. Run with -benchtime=200000x.
func BenchmarkRoundTrip(b *testing.B) {
	s := newSegment(b, 64)
	args := []string{"--segment", s.Name(), "--portno-start", "1", "--nr-ops", "64", "--nr-threads", "1", "--log-level", "0"}
	if p := os.Getenv("ARCHIPELAGO_NULLD_PROFILE"); p != "" {
		args = append(args, "--cpuprofile", p)
	}
	nulld := testbin.Start(b, "nulld", args...)
	b.Cleanup(func() { nulld.Stop(10 * time.Second) })
	waitBound(b, s, 1)
	sock := startSockEcho(b)
	c, err := peer.NewClient(s)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, depth := range []int{1, 32} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			n := max(b.N, depth)
			st, err := loadgen.Run(context.Background(), c, loadgen.Options{Port: 1, Op: xseg.OpPing, Depth: depth, Count: uint64(n)})
			if err != nil {
				b.Fatal(err)
			}
			segRate := float64(st.Requests) / st.Elapsed.Seconds()
			sockRate, sockMed := sockLoad(b, sock, depth, n)
			b.ReportMetric(segRate, "seg-req/s")
			b.ReportMetric(sockRate, "sock-req/s")
			b.ReportMetric(segRate/sockRate, "seg/sock")
			b.ReportMetric(float64(st.Median.Nanoseconds())/1e3, "seg-median-µs")
			b.ReportMetric(float64(sockMed.Nanoseconds())/1e3, "sock-median-µs")
			if b.N > 1000 {
				b.Logf("depth %d: segment %.0f req/s (median %v), socket %.0f req/s (median %v): ratio %.2f",
					depth, segRate, st.Median, sockRate, sockMed, segRate/sockRate)
			}
		})
	}
}
