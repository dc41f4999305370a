//go:build ceph

package e2e_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/testutil"
)

// vlmc du on a RADOS pool of the micro cluster: what du says the pool
// holds against `rados ls` and `rados stat` of the data and maps
// namespaces.
func TestDuSharedRADOSPool(t *testing.T) {
	testutil.NeedBinaries(t, "rados")
	o := radosOptions(t, "du")
	ls := func(ns string) func(t *testing.T) map[string]int64 {
		return func(t *testing.T) map[string]int64 {
			t.Helper()
			rados := func(args ...string) string {
				return testutil.Run(t, "rados", append([]string{"-c", o.CephConf, "-p", o.Pool, "--namespace", ns}, args...)...)
			}
			out := map[string]int64{}
			for _, name := range strings.Fields(rados("ls")) {
				// "POOL/NAME mtime ..., size N"
				st := rados("stat", name)
				i := strings.LastIndex(st, "size ")
				n, err := strconv.ParseInt(strings.TrimSpace(st[i+len("size "):]), 10, 64)
				if i < 0 || err != nil {
					t.Fatalf("rados stat %s: %q", name, st)
				}
				out[name] = n
			}
			return out
		}
	}
	duTwoHosts(t, o, duStorage{data: ls(o.Namespace + "-b"), maps: ls(o.Namespace + "-m")})
}
