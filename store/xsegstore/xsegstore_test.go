package xsegstore_test

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/storetest"
	"github.com/archipelago-go/archipelago/store/xsegstore"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestFiledConformance runs the store conformance suite against filed
// processes, through the segment: each sub-test gets a fresh filed on a
// fresh directory and port.
func TestFiledConformance(t *testing.T) {
	name := fmt.Sprintf("xsegstoretest-%d", os.Getpid())
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
	t.Cleanup(func() { c.Close() })
	var next atomic.Int32
	open := func(t *testing.T) store.Store {
		port := int(next.Add(1))
		if port >= 200 {
			t.Fatal("out of ports")
		}
		testbin.Start(t, "filed", "--segment", name, "--portno-start", fmt.Sprint(port),
			"--archip-dir", t.TempDir(), "--nr-ops", "64", "--nr-threads", "8", "--log-level", "1")
		testbin.WaitFor(t, 10*time.Second, "filed to bind", func() bool { _, ok := seg.Owner(port); return ok })
		return xsegstore.New(c, port)
	}
	t.Run("Store", func(t *testing.T) { storetest.Run(t, open) })
	t.Run("Locker", func(t *testing.T) { storetest.RunLocker(t, open) })
	if err := seg.Check(); err != nil {
		t.Fatal(err)
	}
}
