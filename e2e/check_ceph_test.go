//go:build ceph

package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// vlmc check on a RADOS pool of the micro cluster: the objects damaged
// by hand with the rados tool.

// ckRados is a host's storage on RADOS: the maps and data namespaces of
// e2etest's RADOS options.
type ckRados struct {
	o e2etest.Options
}

func (r ckRados) rados(t *testing.T, store string, args ...string) string {
	t.Helper()
	ns := r.o.Namespace + "-m"
	if store == "data" {
		ns = r.o.Namespace + "-b"
	}
	return testutil.Run(t, "rados", append([]string{"-c", r.o.CephConf, "-p", r.o.Pool, "-N", ns}, args...)...)
}

func (r ckRados) list(t *testing.T, store string) []string {
	t.Helper()
	return strings.Fields(r.rados(t, store, "ls"))
}

func (r ckRados) read(t *testing.T, store, name string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "obj")
	r.rados(t, store, "get", name, f)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r ckRados) write(t *testing.T, store, name string, b []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "obj")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r.rados(t, store, "put", name, f)
}

func (r ckRados) remove(t *testing.T, store, name string) {
	t.Helper()
	r.rados(t, store, "rm", name)
}

// TestCheckNamesDamageInRADOS is TestCheckNamesDamageInFiles on a RADOS
// pool, the objects damaged with rados put and rm.
func TestCheckNamesDamageInRADOS(t *testing.T) {
	testutil.NeedBinaries(t, "rados")
	o := radosOptions(t, "check")
	o.HostID = "host-a"
	e := e2etest.NewWith(t, o)
	e.Start()
	checkNamesDamage(t, e, ckRados{o: o})
}

// TestCheckWhileAnotherHostWritesRADOS is TestCheckWhileAnotherHostWrites
// on a RADOS pool.
func TestCheckWhileAnotherHostWritesRADOS(t *testing.T) {
	checkWhileWriting(t, radosOptions(t, "checkbusy"))
}
