package e2e_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/volume"
)

// sharedHosts starts two hosts on one shared directory. Host A's file
// blockers run with fdcache = 0 (no file kept open: the setting must be
// accepted), host B's with the default cache, the one that must never
// serve a file another host deleted or replaced.
func sharedHosts(t *testing.T) (a, b *e2etest.Env, mapsDir string) {
	t.Helper()
	testutil.NeedBinaries(t, "qemu-io")
	shared := t.TempDir()
	o := e2etest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"}
	a, b = e2etest.TwoHosts(t, o)
	setKey(t, a, "blockerb", "fdcache = 0")
	setKey(t, a, "blockerm", "fdcache = 0")
	a.Start()
	b.Start()
	return a, b, o.MapDir
}

// setKey adds a line to a section of e's configuration file.
func setKey(t *testing.T, e *e2etest.Env, section, line string) {
	t.Helper()
	data, err := os.ReadFile(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	head := "[" + section + "]\n"
	if !strings.Contains(string(data), head) {
		t.Fatalf("%s has no %s", e.Config, head)
	}
	text := strings.Replace(string(data), head, head+line+"\n", 1)
	if err := os.WriteFile(e.Config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unlockIfOurs closes vol on e if e holds its lock (a read may take it).
func unlockIfOurs(e *e2etest.Env, vol, host string) {
	if out, _ := e.Run("vlmc", "info", vol); strings.Contains(out, host) {
		e.Run("vlmc", "close", vol)
	}
}

// checkMaps runs the invariant walk over the shared maps directory: every
// map decodes and no object owned by one volume is reachable from another.
func checkMaps(t *testing.T, mapsDir string) {
	t.Helper()
	st, err := filestore.Open(filestore.Options{Dir: mapsDir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := volume.Check(t.Context(), st); err != nil {
		t.Errorf("maps of the shared directory: %v", err)
	}
}

// TestTwoHostsSeeEachOthersChanges: host B has read volume V (its file
// blockers hold V's header, map pages and data objects open); host A
// removes and re-creates V and writes, or renames V away. B must read A's
// new data, B's writes must land where A reads them, and after the rename
// V no longer exists for B.
func TestTwoHostsSeeEachOthersChanges(t *testing.T) {
	a, b, mapsDir := sharedHosts(t)
	const vol = "shared-volume"
	a.Must("vlmc", "create", vol, "--size", "16M")
	if err := testutil.QemuIO(t, a.URI(vol), "write -P 1 0 4M", "write -P 1 8M 1M", "flush"); err != nil {
		t.Fatal(err)
	}
	a.Must("vlmc", "close", vol)
	if err := testutil.QemuIO(t, b.URI(vol), "read -P 1 0 4M", "read -P 1 8M 1M"); err != nil {
		t.Fatalf("B reads A's volume: %v", err)
	}
	unlockIfOurs(b, vol, "host-b")

	// A removes V and creates it again, with other data.
	a.Must("vlmc", "remove", vol)
	a.Must("vlmc", "create", vol, "--size", "16M")
	if err := testutil.QemuIO(t, a.URI(vol), "write -P 2 0 4M", "flush"); err != nil {
		t.Fatal(err)
	}
	a.Must("vlmc", "close", vol)
	if err := testutil.QemuIO(t, b.URI(vol), "read -P 2 0 4M", "read -P 0 8M 1M"); err != nil {
		t.Fatalf("B reads the old volume after A re-created it: %v", err)
	}
	// B writes, flushes and lets go; A must read B's write.
	if err := testutil.QemuIO(t, b.URI(vol), "write -P 3 1M 1M", "flush"); err != nil {
		t.Fatalf("B writes: %v", err)
	}
	b.Must("vlmc", "close", vol)
	if err := testutil.QemuIO(t, a.URI(vol), "read -P 2 0 1M", "read -P 3 1M 1M", "read -P 2 2M 2M"); err != nil {
		t.Fatalf("B's acknowledged, flushed write is not in the volume A reads: %v", err)
	}
	unlockIfOurs(a, vol, "host-a")

	// A renames V away: B knows V no more, and reads the new name.
	const renamed = "shared-renamed"
	a.Must("vlmc", "rename", vol, renamed)
	fails(t, b, []string{"info", vol}, "not found")
	if out, err := b.Run("vlmc", "open", vol); err == nil {
		t.Errorf("B opens %s after A renamed it:\n%s", vol, out)
	}
	if err := testutil.QemuIO(t, b.URI(vol), "write -P 4 0 4K"); err == nil {
		t.Errorf("B writes to %s after A renamed it", vol)
	}
	if err := testutil.QemuIO(t, b.URI(renamed), "read -P 3 1M 1M", "read -P 2 2M 2M"); err != nil {
		t.Fatalf("B reads the renamed volume: %v", err)
	}
	unlockIfOurs(b, renamed, "host-b")
	if la, lb := a.Must("vlmc", "list"), b.Must("vlmc", "list"); la != renamed || lb != renamed {
		t.Errorf("lists after the rename: A %q, B %q; want %q on both", la, lb, renamed)
	}
	checkMaps(t, mapsDir)
}

// TestTwoHostsRacingRenames: eight concurrent `vlmc rename X X-i`, four
// through each host, must leave exactly one winner, every round: one
// volume (the winner's name), listed alike by both hosts, its data intact,
// and no object owned by two volumes.
func TestTwoHostsRacingRenames(t *testing.T) {
	a, b, mapsDir := sharedHosts(t)
	hosts := []*e2etest.Env{a, b}
	const rounds = 6
	for round := range rounds {
		x := fmt.Sprintf("racing-%d", round)
		creator := hosts[round%2]
		creator.Must("vlmc", "create", x, "--size", "8M")
		if err := testutil.QemuIO(t, creator.URI(x), fmt.Sprintf("write -P %d 0 1M", round+1), "flush"); err != nil {
			t.Fatal(err)
		}
		creator.Must("vlmc", "close", x)
		// Both hosts have read X (their blockers hold its files open),
		// as a host does that served it before.
		for _, h := range hosts {
			if out, err := h.Run("vlmc", "info", x); err != nil {
				t.Fatalf("info %s: %v\n%s", x, err, out)
			}
		}

		var wg sync.WaitGroup
		outs := make([]string, 8)
		errs := make([]error, 8)
		start := make(chan struct{})
		for i := range 8 {
			wg.Go(func() {
				<-start
				// Spread over a few hundred milliseconds, in another
				// order each round: some renames run while another
				// holds the lock, some after the winner let go.
				time.Sleep(time.Duration((i*5+round*3)%8) * 40 * time.Millisecond)
				outs[i], errs[i] = hosts[i%2].Run("vlmc", "rename", x, fmt.Sprintf("%s-%d", x, i))
			})
		}
		close(start)
		wg.Wait()
		var won []string
		for i, err := range errs {
			if err == nil {
				won = append(won, fmt.Sprintf("%s-%d", x, i))
			} else if !strings.Contains(outs[i], "locked by") && !strings.Contains(outs[i], "not found") {
				t.Errorf("round %d: rename %d failed for another reason than the race: %s", round, i, outs[i])
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d renames of %s succeeded: %q", round, len(won), x, won)
		}
		t.Logf("round %d: %s won", round, won[0])
		la, lb := a.Must("vlmc", "list"), b.Must("vlmc", "list")
		if la != lb {
			t.Fatalf("round %d: host A lists\n%s\nhost B lists\n%s", round, la, lb)
		}
		if names := strings.Fields(la); slices.Contains(names, x) || !slices.Contains(names, won[0]) {
			t.Fatalf("round %d: list %q after %s won", round, names, won[0])
		}
		for _, h := range hosts {
			if err := testutil.QemuIO(t, h.URI(won[0]), fmt.Sprintf("read -P %d 0 1M", round+1)); err != nil {
				t.Fatalf("round %d: the winner %s: %v", round, won[0], err)
			}
			unlockIfOurs(h, won[0], h.Cfg.HostID)
		}
		checkMaps(t, mapsDir)
		if t.Failed() {
			return
		}
	}
}

// TestTwoHostsRacingManagement races eight management operations on the
// same names through two hosts: two renames X->Y, a remove of X, two
// snapshots X->S, a create of Y, a resize of X and a clone S->Y. Whatever
// wins, the outcome is one namespace: at most one operation made Y, at most
// one consumed X, at most one made S; what exists is exactly what the
// winners imply, both hosts list it alike, the data survived, and no
// object is owned by two volumes.
func TestTwoHostsRacingManagement(t *testing.T) {
	a, b, mapsDir := sharedHosts(t)
	for round := range 4 {
		x, y, snap := fmt.Sprintf("mgmt-%d", round), fmt.Sprintf("mgmt-%d-new", round), fmt.Sprintf("mgmt-%d-snap", round)
		a.Must("vlmc", "create", x, "--size", "8M")
		if err := testutil.QemuIO(t, a.URI(x), fmt.Sprintf("write -P %d 0 1M", round+1), "flush"); err != nil {
			t.Fatal(err)
		}
		a.Must("vlmc", "close", x)
		for _, h := range []*e2etest.Env{a, b} {
			h.Must("vlmc", "info", x)
		}
		ops := []struct {
			h    *e2etest.Env
			args []string
		}{
			{a, []string{"rename", x, y}},
			{b, []string{"rename", x, y}},
			{b, []string{"remove", x}},
			{a, []string{"snapshot", x, snap}},
			{b, []string{"snapshot", x, snap}},
			{a, []string{"create", y, "--size", "4M"}},
			{b, []string{"resize", x, "--size", "16M"}},
			{a, []string{"create", y, "--snap", snap}},
		}
		ok := make([]bool, len(ops))
		outs := make([]string, len(ops))
		var wg sync.WaitGroup
		for i, op := range ops {
			wg.Go(func() {
				time.Sleep(time.Duration((i*3+round*5)%8) * 30 * time.Millisecond)
				out, err := op.h.Run("vlmc", op.args...)
				ok[i], outs[i] = err == nil, strings.TrimSpace(out)
			})
		}
		wg.Wait()
		var summary []string
		for i, op := range ops {
			res := "ok"
			if !ok[i] {
				res = outs[i]
			}
			summary = append(summary, fmt.Sprintf("%s %v: %s", op.h.Cfg.HostID, op.args, res))
		}
		t.Logf("round %d:\n%s", round, strings.Join(summary, "\n"))
		count := func(is ...int) int {
			n := 0
			for _, i := range is {
				if ok[i] {
					n++
				}
			}
			return n
		}
		madeY, tookX, madeS := count(0, 1, 5, 7), count(0, 1, 2), count(3, 4)
		if madeY > 1 || tookX > 1 || madeS > 1 {
			t.Fatalf("round %d: %d operations made %s, %d took %s away, %d made %s", round, madeY, y, tookX, x, madeS, snap)
		}
		la, lb := a.Must("vlmc", "list"), b.Must("vlmc", "list")
		if la != lb {
			t.Fatalf("round %d: host A lists\n%s\nhost B lists\n%s", round, la, lb)
		}
		names := strings.Fields(la)
		for name, want := range map[string]bool{x: tookX == 0, y: madeY == 1, snap: madeS == 1} {
			if slices.Contains(names, name) != want {
				t.Errorf("round %d: %s listed: %v, want %v (list %q)", round, name, !want, want, names)
			}
		}
		// The data written into X lives on under whichever name holds it.
		pattern := fmt.Sprintf("read -P %d 0 1M", round+1)
		var holders []string
		switch {
		case tookX == 0:
			holders = append(holders, x)
		case count(0, 1) == 1:
			holders = append(holders, y)
		}
		if madeS == 1 {
			holders = append(holders, snap)
		}
		if ok[7] {
			holders = append(holders, y)
		}
		for _, name := range holders {
			for _, h := range []*e2etest.Env{a, b} {
				if err := testutil.QemuIOReadOnly(t, h.URI(name), pattern); err != nil {
					t.Errorf("round %d: %s through %s: %v", round, name, h.Cfg.HostID, err)
				}
				unlockIfOurs(h, name, h.Cfg.HostID)
			}
		}
		checkMaps(t, mapsDir)
		if t.Failed() {
			return
		}
	}
}
