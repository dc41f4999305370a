//go:build ceph

package cli_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/internal/clitest"
)

// The forced-unlock fencing test on a RADOS pool of the micro cluster
// (scripts/micro-ceph.sh; ARCHIPELAGO_CEPH_CONF names its ceph.conf).
func TestTwoHostsForcedUnlockFencesRADOSPool(t *testing.T) {
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
	forcedUnlockFences(t, clitest.Options{CephConf: conf, Pool: pool, Namespace: fmt.Sprintf("fence-%d", os.Getpid())})
}
