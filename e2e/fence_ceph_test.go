//go:build ceph

package e2e_test

import "testing"

// The forced-unlock fencing test on a RADOS pool of the micro cluster
// (scripts/micro-ceph.sh; ARCHIPELAGO_CEPH_CONF names its ceph.conf).
func TestTwoHostsForcedUnlockFencesRADOSPool(t *testing.T) {
	forcedUnlockFences(t, radosOptions(t, "fence"))
}
