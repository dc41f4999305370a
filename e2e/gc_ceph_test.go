//go:build ceph

package e2e_test

import (
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// The garbage collector's tests of gc_test.go on a RADOS pool of the micro
// cluster (scripts/micro-ceph.sh; ARCHIPELAGO_CEPH_CONF names its
// ceph.conf), the objects counted with `rados ls`.

func TestGCSharedRADOSPool(t *testing.T)             { runGCBasic(t, radosPool(t, "gc")) }
func TestGCWhileWritingSharedRADOSPool(t *testing.T) { runGCWhileWriting(t, radosPool(t, "gcw"), 8) }
func TestGCKilledSharedRADOSPool(t *testing.T)       { runGCKilled(t, radosPool(t, "gck"), 2) }
func TestGCPeriodicSharedRADOSPool(t *testing.T)     { runGCPeriodic(t, radosPool(t, "gcp")) }
func TestGCRootMarkersSharedRADOSPool(t *testing.T)  { runGCRootMarkers(t, radosPool(t, "gcm"), 1) }

// radosPool is a namespace pair of the micro cluster's pool (data in
// "<ns>-b", maps in "<ns>-m", as e2etest names them), listed with
// `rados ls` (sizes unknown: -1).
func radosPool(t *testing.T, what string) gcPool {
	testutil.NeedBinaries(t, "rados")
	o := radosOptions(t, what)
	ls := func(ns string) func(t *testing.T) map[string]int64 {
		return func(t *testing.T) map[string]int64 {
			t.Helper()
			out := map[string]int64{}
			for _, name := range strings.Fields(testutil.Run(t, "rados", "-c", o.CephConf, "-p", o.Pool, "--namespace", ns, "ls")) {
				out[name] = -1
			}
			return out
		}
	}
	return gcPool{
		opts: o,
		data: ls(o.Namespace + "-b"),
		maps: ls(o.Namespace + "-m"),
		openMaps: func(t *testing.T) store.Store {
			s, err := radosstore.Open(radosstore.Options{Pool: o.Pool, CephConf: o.CephConf, Namespace: o.Namespace + "-m"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}
