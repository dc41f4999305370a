//go:build ceph

package e2e_test

import (
	"testing"

	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// Crash under load on a RADOS pool of the micro cluster
// (scripts/micro-ceph.sh; ARCHIPELAGO_CEPH_CONF names its ceph.conf).
func TestCrashUnderLoadSharedRADOSPool(t *testing.T) {
	o := radosOptions(t, "crashload")
	runCrashLoad(t, o, func(t *testing.T) store.Store {
		// The namespace clitest gives blockerm (the maps).
		s, err := radosstore.Open(radosstore.Options{Pool: o.Pool, CephConf: o.CephConf, Namespace: o.Namespace + "-m"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
