//go:build ceph

package volume

import "testing"

// TestGCModelTwoHostsRADOS is the collector's two-host randomized test
// (gc_model_test.go) on a namespace of the test cluster's pool
// (radosShared, twohost_model_ceph_test.go), 150 steps (7 s here).
func TestGCModelTwoHostsRADOS(t *testing.T) {
	seed := modelSeed(t, 41)
	t.Logf("seed %d (replay: VOLUME_MODEL_SEED=%d go test -tags ceph -run TestGCModelTwoHostsRADOS ./volume)", seed, seed)
	runGCModel(t, seed, modelSteps(150), radosShared(t))
}
