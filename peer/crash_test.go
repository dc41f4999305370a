package peer_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestCrashRecovery kills a peer or a client with SIGKILL at random
// instants under traffic, round after round, and checks after every round
// that requests still flow, and at the end that every request is back in
// the pool and the heap is whole. Set ARCHIPELAGO_CRASH_SEED to replay.
func TestCrashRecovery(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 20
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ARCHIPELAGO_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (ARCHIPELAGO_CRASH_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	s := newSegment(t, 64)
	seg := s.Name()
	startServer := func() *testbin.Proc {
		return testbin.Start(t, "nulld", "--segment", seg, "--portno-start", "1", "--nr-ops", "32", "--nr-threads", "2", "--log-level", "1")
	}
	startLoader := func(op string) *testbin.Proc {
		return testbin.Start(t, "xseg", "load", "--segment", seg, "--port", "1", "--depth", "8", "--size", "8192", "--op", op)
	}
	procs := []*testbin.Proc{startServer(), startLoader("read"), startLoader("write")}
	restart := []func() *testbin.Proc{startServer, func() *testbin.Proc { return startLoader("read") }, func() *testbin.Proc { return startLoader("write") }}
	waitBound(t, s, 1)

	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	kills := [3]int{}
	for round := 0; round < rounds; round++ {
		time.Sleep(time.Duration(rng.IntN(30000)) * time.Microsecond)
		v := rng.IntN(3)
		for i, p := range procs {
			if i != v && p.Exited() {
				t.Fatalf("round %d: process %d exited by itself: %v\n%s", round, i, p.Wait(0), p.Output())
			}
		}
		procs[v].Kill()
		kills[v]++
		procs[v] = restart[v]()
		// Traffic must flow again: once the server is back, a request goes
		// through within a bounded time.
		testutil.WaitForErr(t, 15*time.Second, fmt.Sprintf("traffic in round %d after killing process %d", round, v), func() error {
			return call(t, c, xseg.OpPing, 1, 4096)
		})
	}
	for _, p := range procs {
		p.Kill()
	}
	c.Close()
	s.Recover()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	in := s.Info()
	t.Logf("kills: server %d, readers %d, writers %d; %d structure repairs, %d requests reclaimed", kills[0], kills[1], kills[2], in.Repairs, in.Reclaimed)
	if in.FreeRequests != in.Requests || in.HeapUsed != 0 {
		t.Fatalf("leak after recovery: %d of %d requests free, %d heap bytes in use", in.FreeRequests, in.Requests, in.HeapUsed)
	}
	for no := 0; no < in.Ports; no++ {
		if pid, _ := s.Owner(no); pid != 0 {
			t.Errorf("port %d still bound to dead pid %d", no, pid)
		}
	}
}
