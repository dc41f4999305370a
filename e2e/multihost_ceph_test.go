//go:build ceph

package e2e_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
)

// The two-host test on a RADOS pool of the micro cluster
// (scripts/micro-ceph.sh; ARCHIPELAGO_CEPH_CONF names its ceph.conf).
func TestTwoHostsSharedRADOSPool(t *testing.T) {
	twoHosts(t, radosOptions(t, "twohosts"))
}

// radosOptions are the clitest options of hosts on the micro cluster's
// pool (ARCHIPELAGO_CEPH_CONF, ARCHIPELAGO_CEPH_POOL), in namespaces
// named after what and this process. It skips the test where no cluster
// runs, and fails it in CI.
func radosOptions(t *testing.T, what string) e2etest.Options {
	t.Helper()
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
	return e2etest.Options{CephConf: conf, Pool: pool, Namespace: fmt.Sprintf("%s-%d", what, os.Getpid())}
}
