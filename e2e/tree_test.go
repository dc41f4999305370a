package e2e_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// Snapshot tree operations through vlmc on a directory (a RADOS pool in
// tree_ceph_test.go): list --tree,
// children, info's children, flatten while a client writes (then the
// parent removed and collected: nothing of it is left in the directory),
// rollback refused while an NBD client is connected, and on two hosts
// while the other holds the lock.

func qemuMust(t *testing.T, e *e2etest.Env, vol string, cmds ...string) {
	t.Helper()
	if err := testutil.QemuIO(t, e.URI(vol), cmds...); err != nil {
		t.Fatalf("qemu-io %s %v: %v", vol, cmds, err)
	}
}

func TestTreeFlattenRollback(t *testing.T) { runTreeFlattenRollback(t, dirPool(t)) }

func TestRollbackTwoHosts(t *testing.T) { runRollbackTwoHosts(t, e2etest.Options{}) }

func runTreeFlattenRollback(t *testing.T, pool gcPool) {
	testutil.NeedBinaries(t, "qemu-io")
	o := pool.opts
	o.HostID = "host-a"
	a := e2etest.NewWith(t, o)
	a.Start()

	// vm → vm-s1 → c1 → c1-s → c2, and vm → vm-s2.
	a.Must("vlmc", "create", "vm", "--size", "16M")
	qemuMust(t, a, "vm", "write -P 1 0 4M", "write -P 2 8M 1M")
	a.Must("vlmc", "snapshot", "vm", "vm-s1")
	a.Must("vlmc", "create", "c1", "--snap", "vm-s1")
	qemuMust(t, a, "c1", "write -P 3 4M 64K")
	a.Must("vlmc", "snapshot", "c1", "c1-s")
	a.Must("vlmc", "create", "c2", "--snap", "c1-s")
	qemuMust(t, a, "vm", "write -P 9 0 4M")
	a.Must("vlmc", "snapshot", "vm", "vm-s2")

	tree := a.Must("vlmc", "list", "--tree")
	want := `vm
├── vm-s1 (snapshot)
│   └── c1
│       └── c1-s (snapshot)
│           └── c2
└── vm-s2 (snapshot)`
	if tree != want {
		t.Fatalf("vlmc list --tree:\n%s\nwant:\n%s", tree, want)
	}
	var nodes []volclient.TreeNode
	if err := json.Unmarshal([]byte(a.Must("vlmc", "list", "--tree", "--json")), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 6 || nodes[0].Name != "c1" || nodes[0].Parent != "vm-s1" || !slices.Equal(nodes[0].Children, []string{"c1-s"}) {
		t.Fatalf("list --tree --json: %+v", nodes)
	}
	if got := a.Must("vlmc", "children", "vm"); got != "vm-s1\nvm-s2" {
		t.Fatalf("vlmc children vm: %q", got)
	}
	var info volclient.Info
	if err := json.Unmarshal([]byte(a.Must("vlmc", "info", "--json", "vm-s1")), &info); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.Children, []string{"c1"}) {
		t.Fatalf("vlmc info vm-s1: children %v, want c1", info.Children)
	}
	if out := a.Must("vlmc", "info", "c1-s"); !strings.Contains(out, "clones:     c2") {
		t.Fatalf("vlmc info c1-s does not name its clone:\n%s", out)
	}

	// Flatten a clone while a client writes to it, then remove its parent
	// and the parent's volume, and collect.
	a.Must("vlmc", "create", "base", "--size", "16M")
	qemuMust(t, a, "base", "write -P 4 0 4M", "write -P 5 4M 4M", "write -P 6 12M 64K")
	a.Must("vlmc", "snapshot", "base", "base-s")
	a.Must("vlmc", "create", "fl", "--snap", "base-s", "--size", "20M")
	vm := testutil.StartQemuSession(t, a.URI("fl"))
	vm.Must("write -P 7 4M 4K")
	var res volclient.FlattenResult
	if err := json.Unmarshal([]byte(a.Must("vlmc", "flatten", "--json", "fl")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Parent != "base-s" || res.Copied != 8<<20 {
		t.Fatalf("flatten: %+v, want parent base-s and 8 MiB copied (blocks 0 and 3; the write copied block 1)", res)
	}
	vm.Must("write -P 8 12M 4K") // the connection goes on
	vm.Close()
	if out := a.Must("vlmc", "info", "fl"); !strings.Contains(out, "parent:     -") {
		t.Fatalf("fl still has a parent after flatten:\n%s", out)
	}
	if out, err := a.Run("vlmc", "flatten", "base-s"); err == nil || !strings.Contains(out, "snapshot") {
		t.Fatalf("flatten of a snapshot: %v\n%s", err, out)
	}
	a.Must("vlmc", "remove", "base-s")
	a.Must("vlmc", "remove", "base")
	a.Must("vlmc", "gc")
	objs := pool.objects(t)
	for _, set := range []map[string]int64{objs.data, objs.pages} {
		for n := range set {
			if strings.HasPrefix(n, "base_") {
				t.Errorf("object %s of the flattened clone's parent left after gc", n)
			}
		}
	}
	qemuMust(t, a, "fl", "read -P 4 0 4M", "read -P 7 4M 4K", "read -P 5 4100K 4092K",
		"read -P 8 12M 4K", "read -P 6 12292K 60K", "read -P 0 12352K 7M")
	if out := a.Must("vlmc", "list", "--tree"); !slices.Contains(strings.Split(out, "\n"), "fl") {
		t.Fatalf("fl is not a root of the tree after flatten:\n%s", out)
	}

	// Rollback: refused while an NBD client is connected, and for a
	// snapshot that is not of the volume's history.
	vm = testutil.StartQemuSession(t, a.URI("vm"))
	vm.Must("read -P 9 0 4M")
	out, err := a.Run("vlmc", "rollback", "vm", "vm-s1")
	if err == nil || !strings.Contains(out, `volume "vm" is in use by 1 connection`) {
		t.Fatalf("rollback with a client connected: %v\n%s", err, out)
	}
	vm.Close()
	rollback(t, a, "vm", "vm-s1")
	if out, err := a.Run("vlmc", "rollback", "vm", "c1-s"); err == nil || !strings.Contains(out, "history") {
		t.Fatalf("rollback to a snapshot of a clone: %v\n%s", err, out)
	}
	qemuMust(t, a, "vm", "read -P 1 0 4M", "read -P 2 8M 1M")
	rollback(t, a, "vm", "vm-s2")
	qemuMust(t, a, "vm", "read -P 9 0 4M")
	rollback(t, a, "c2", "vm-s1") // c2's history: c1-s, then vm-s1
	qemuMust(t, a, "c2", "read -P 1 0 4M", "read -P 0 4M 64K")
	a.Must("vlmc", "check")
}

// rollback runs vlmc rollback vol snap on e once the sessions of the
// NBD clients that used vol before have ended: a client's connection ends
// as it exits, and the mapper hears of it a moment later (until then the
// rollback is refused as busy). Any other failure fails the test.
func rollback(t *testing.T, e *e2etest.Env, vol, snap string) {
	t.Helper()
	testutil.WaitForErr(t, 30*time.Second, "rollback of "+vol+" once its clients are gone", func() error {
		out, err := e.Run("vlmc", "rollback", vol, snap)
		if err != nil && !strings.Contains(out, "is in use by") {
			t.Fatalf("vlmc rollback %s %s: %v\n%s", vol, snap, err, out)
		}
		return err
	})
}

func runRollbackTwoHosts(t *testing.T, o e2etest.Options) {
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, o)
	a.Start()
	b.Start()
	a.Must("vlmc", "create", "vm", "--size", "8M")
	qemuMust(t, a, "vm", "write -P 1 0 1M")
	a.Must("vlmc", "snapshot", "vm", "vm-s")
	qemuMust(t, a, "vm", "write -P 2 0 1M")
	a.Must("vlmc", "open", "vm")
	// A holds the lock: B's rollback is refused, naming it; A's own too
	// (it is open there).
	out, err := b.Run("vlmc", "rollback", "vm", "vm-s")
	if err == nil || !strings.Contains(out, "locked by host-a") {
		t.Fatalf("rollback on B while A holds the lock: %v\n%s", err, out)
	}
	out, err = a.Run("vlmc", "rollback", "vm", "vm-s")
	if err == nil || !strings.Contains(out, "is open on this host") {
		t.Fatalf("rollback on A while open there: %v\n%s", err, out)
	}
	qemuMust(t, b, "vm", "read -P 2 0 1M")
	a.Must("vlmc", "close", "vm")
	rollback(t, b, "vm", "vm-s") // B's qemu-io read just before
	qemuMust(t, a, "vm", "read -P 1 0 1M")
	if out := a.Must("vlmc", "info", "vm"); !strings.Contains(out, "locked by:  -") {
		t.Fatalf("vm stays locked after B's rollback:\n%s", out)
	}
}
