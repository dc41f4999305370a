//go:build ceph

package radosstore_test

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

// TestRadosdConformance runs the store conformance suite against radosd
// processes, through the segment: each sub-test gets a fresh radosd on a
// fresh RADOS namespace and port.
func TestRadosdConformance(t *testing.T) {
	o := cluster(t)
	// radosd needs librados: build the programs with the ceph tag, as
	// this test is.
	if os.Getenv("ARCHIPELAGO_BUILD_TAGS") == "" {
		t.Setenv("ARCHIPELAGO_BUILD_TAGS", "ceph")
	}
	name := fmt.Sprintf("radosdtest-%d", os.Getpid())
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
		args := []string{"--segment", name, "--portno-start", fmt.Sprint(port),
			"--pool", o.Pool, "--ceph-conf", o.CephConf, "--namespace", namespace(t, o),
			"--nr-ops", "64", "--nr-threads", "8", "--log-level", "1"}
		if o.CephxID != "" {
			args = append(args, "--cephx-id", o.CephxID)
		}
		testbin.Start(t, "radosd", args...)
		testbin.WaitFor(t, 20*time.Second, "radosd to bind", func() bool { _, ok := seg.Owner(port); return ok })
		return xsegstore.New(c, port)
	}
	t.Run("Store", func(t *testing.T) { storetest.Run(t, open) })
	t.Run("Locker", func(t *testing.T) { storetest.RunLocker(t, open) })
	if err := seg.Check(); err != nil {
		t.Fatal(err)
	}
}
