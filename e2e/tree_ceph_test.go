//go:build ceph

package e2e_test

import "testing"

// The snapshot tree operations of tree_test.go on a RADOS pool of the
// micro cluster, the parent's objects looked for with `rados ls`.

func TestTreeFlattenRollbackRADOSPool(t *testing.T) {
	runTreeFlattenRollback(t, radosPool(t, "tree"))
}

func TestRollbackTwoHostsRADOSPool(t *testing.T) {
	runRollbackTwoHosts(t, radosOptions(t, "rollback"))
}
