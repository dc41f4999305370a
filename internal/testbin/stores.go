package testbin

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/xsegstore"
	"github.com/archipelago-go/archipelago/xseg"
)

// BlockerStores returns an opener for the store conformance suite that
// gives each sub-test a fresh blocker process (prog, with extra(t)'s
// flags) on a port of its own of one segment, reached through the segment
// with xsegstore. The segment's invariants are checked at cleanup.
func BlockerStores(t testing.TB, prefix, prog string, extra func(t testing.TB) []string) func(t testing.TB) store.Store {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	xseg.Destroy(name)
	seg, err := xseg.Create(xseg.Config{Name: name, SizeMiB: 128, Ports: 256, DynPorts: 200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close(); xseg.Destroy(name) })
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if err := seg.Check(); err != nil {
			t.Error(err)
		}
	})
	var next atomic.Int32
	return func(t testing.TB) store.Store {
		port := int(next.Add(1))
		if port >= 200 {
			t.Fatal("out of ports")
		}
		args := append([]string{"--segment", name, "--portno-start", fmt.Sprint(port),
			"--nr-ops", "64", "--nr-threads", "8", "--log-level", "1"}, extra(t)...)
		Start(t, prog, args...)
		testutil.WaitFor(t, 20*time.Second, prog+" to bind", func() bool { _, ok := seg.Owner(port); return ok })
		return xsegstore.New(c, port)
	}
}
