//go:build ceph

package cli_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/internal/clitest"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// Crash under load on a RADOS pool of the micro cluster
// (scripts/micro-ceph.sh; ARCHIPELAGO_CEPH_CONF names its ceph.conf).
func TestCrashUnderLoadSharedRADOSPool(t *testing.T) {
	conf := os.Getenv("ARCHIPELAGO_CEPH_CONF")
	if conf == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("ARCHIPELAGO_CEPH_CONF is not set: CI must boot the micro Ceph cluster")
		}
		t.Skip("ARCHIPELAGO_CEPH_CONF is not set (scripts/micro-ceph.sh start DIR)")
	}
	pool := os.Getenv("ARCHIPELAGO_CEPH_POOL")
	if pool == "" {
		pool = "archipelago"
	}
	ns := fmt.Sprintf("crashload-%d", os.Getpid())
	runCrashLoad(t, clitest.Options{CephConf: conf, Pool: pool, Namespace: ns}, func(t *testing.T) store.Store {
		// The namespace clitest gives blockerm (the maps).
		s, err := radosstore.Open(radosstore.Options{Pool: pool, CephConf: conf, Namespace: ns + "-m"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
