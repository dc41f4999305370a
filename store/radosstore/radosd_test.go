//go:build ceph

package radosstore_test

import (
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/storetest"
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
	open := testbin.BlockerStores(t, "radosdtest", "radosd", func(t testing.TB) []string {
		args := []string{"--pool", o.Pool, "--ceph-conf", o.CephConf, "--namespace", namespace(t, o)}
		if o.CephxID != "" {
			args = append(args, "--cephx-id", o.CephxID)
		}
		return args
	})
	t.Run("Store", func(t *testing.T) { storetest.Run(t, func(t *testing.T) store.Store { return open(t) }) })
	t.Run("Locker", func(t *testing.T) { storetest.RunLocker(t, func(t *testing.T) store.Store { return open(t) }) })
}
