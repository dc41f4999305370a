package e2e_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// A forced unlock while the old holder lives: host A's client (a VM, here
// one qemu-io session kept open) writes and flushes; host B breaks A's lock
// with `vlmc unlock -f`, writes and flushes; A's client goes on writing.
// A's next write fails with EIO, and so does every write after it while
// the connection lasts; both hosts read B's data, and A's late writes are
// nowhere; after both hosts restart they read the same image. The ceph build tag adds the same test
// on a RADOS pool.
func TestTwoHostsForcedUnlockFencesSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	forcedUnlockFences(t, e2etest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"})
}

func forcedUnlockFences(t *testing.T, o e2etest.Options) {
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, o)
	a.Start()
	b.Start()
	const vol = "fenced-disk"
	a.Must("vlmc", "create", vol, "--size", "64M")

	vm := testutil.StartQemuSession(t, a.URI(vol))
	vm.Must("write -P 1 0 8M")
	vm.Must("flush")

	fails(t, b, []string{"unlock", vol}, "locked by host-a")
	b.Must("vlmc", "unlock", "-f", vol)
	if err := testutil.QemuIO(t, b.URI(vol), "write -P 2 0 1M", "write -P 2 4M 1M", "flush"); err != nil {
		t.Fatalf("B's write after the forced unlock: %v", err)
	}

	// A's client goes on: its cached mappings and its hold are stale. Its
	// next write fails (the forced unlock waited until the lease of A's
	// cached mappings ran out), and so does every write after it, also of
	// blocks A wrote before, while the connection lasts. (A failed flush
	// is not seen here: qemu-io 7 prints nothing for it.)
	const eio = "Input/output error"
	for _, c := range []string{"write -P 3 0 8M", "flush", "write -P 3 0 8M", "write -P 3 32M 1M", "flush", "write -P 3 4M 4K"} {
		o := vm.Do(c)
		if strings.HasPrefix(c, "write") && !strings.Contains(o, "write failed: "+eio) {
			t.Fatalf("A's %q after the forced unlock: %q, want EIO", c, o)
		}
	}
	vm.Close()
	// A's mapperd says why, at error level.
	if log, _ := os.ReadFile(a.Cfg.LogFile("mapperd")); !regexp.MustCompile(`level=ERROR .*fenced-disk.*broken by a forced unlock`).Match(log) {
		t.Errorf("A's mapperd log names no fenced request at error level:\n%s", log)
	}

	image := []string{"read -P 2 0 1M", "read -P 1 1M 3M", "read -P 2 4M 1M", "read -P 1 5M 3M", "read -P 0 8M 56M"}
	for _, h := range []*e2etest.Env{a, b} {
		if err := testutil.QemuIO(t, h.URI(vol), image...); err != nil {
			t.Fatalf("%s after the break: %v", h.Cfg.HostID, err)
		}
	}
	for _, h := range []*e2etest.Env{a, b} {
		h.Must("archipelago", "restart")
	}
	for _, h := range []*e2etest.Env{a, b} {
		if err := testutil.QemuIO(t, h.URI(vol), image...); err != nil {
			t.Fatalf("%s after both restarted: %v", h.Cfg.HostID, err)
		}
	}
	// Once B lets go, nobody holds it: a plain unlock says so, naming the
	// volume (it was `RELEASE "fenced-disk_lock" at port 501: not found`).
	b.Must("vlmc", "close", vol)
	fails(t, a, []string{"unlock", vol}, `volume "fenced-disk" is not locked`)
}
