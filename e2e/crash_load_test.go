package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/filestore"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/xseg"
)

// Crash under load: two hosts (own segment, HOST_ID, peers) on one shared
// storage. Each round, each host writes to one of its volumes (one round
// in four one of the other host's) with qemu-io (a few 64 KiB writes,
// then a flush) while the hosts take
// snapshots of what they write, clone snapshots (of either host) and
// remove old ones, and a random peer of a random host (sometimes all of
// them: a host crash) is killed with SIGKILL at a random moment and
// started again at once. After the round every acknowledged (flushed)
// write is there, an unacknowledged one is there or not, a snapshot holds
// what its volume held at some instant while it was taken and never
// changes after, a clone starts as its snapshot, both hosts list the same
// volumes, and volume.Check finds the maps on the shared storage
// consistent. (After a round the volumes it wrote or made are read, all
// of them every 20 rounds and at the end.)
//
// Replay with ARCHIPELAGO_CRASH_SEED=<seed> (printed) and
// ARCHIPELAGO_CRASH_ROUNDS=<n>; the kill instants are random in time, so a
// replay makes the same choices, not the same interleaving.

const (
	crashVolSize = 8 << 20
	crashRegion  = 64 << 10 // one write
	crashSector  = 4 << 10  // the unit the oracle tracks
	crashSectors = crashVolSize / crashSector
	crashWrites  = 3 // writes per host and round
)

func TestCrashUnderLoadSharedDirectory(t *testing.T) {
	shared := t.TempDir()
	runCrashLoad(t, e2etest.Options{DataDir: shared + "/data", MapDir: shared + "/maps"}, func(t *testing.T) store.Store {
		s, err := filestore.Open(filestore.Options{Dir: shared + "/maps"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// sector is the oracle of 4 KiB of a writable volume: every byte is the
// acknowledged value, or one of the values written since without
// acknowledgement.
type sector struct {
	acked byte
	maybe []byte
}

func (s sector) allows(b byte) bool { return b == s.acked || slices.Contains(s.maybe, b) }

// cvol is the oracle of one volume or snapshot.
type cvol struct {
	name  string
	host  int // the host that made it (and writes it)
	snap  bool
	sec   []sector // writable volumes; snapshots not yet read: what each sector may hold
	fixed []byte   // snapshots read once: what they must hold from then on
	// lastWrite says which round wrote it last, from which host, and what
	// that round killed; lastHostCrash, whether it killed all the peers
	// of that host.
	lastWrite     string
	lastHostCrash bool
}

type crashHost struct {
	name string
	env  *e2etest.Env
}

type crashRun struct {
	t      *testing.T
	rng    *rand.Rand
	hosts  [2]*crashHost
	maps   store.Store
	vols   map[string]*cvol
	seq    int
	pat    byte
	counts map[string]int
}

func crashEnvInt(t *testing.T, name string, def uint64) uint64 {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n
	}
	return def
}

func runCrashLoad(t *testing.T, o e2etest.Options, openMaps func(t *testing.T) store.Store) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	seed := crashEnvInt(t, "ARCHIPELAGO_CRASH_SEED", uint64(time.Now().UnixNano()))
	rounds := int(crashEnvInt(t, "ARCHIPELAGO_CRASH_ROUNDS", 100))
	if testing.Short() {
		rounds = min(rounds, 20)
	}
	t.Logf("seed %d (replay: ARCHIPELAGO_CRASH_SEED=%d go test -run '%s' ./e2e)", seed, seed, t.Name())
	c := &crashRun{t: t, rng: rand.New(rand.NewPCG(seed, 0xc4a5)), vols: make(map[string]*cvol), counts: make(map[string]int)}
	for i, id := range []string{"host-a", "host-b"} {
		o.HostID = id
		c.hosts[i] = &crashHost{name: id, env: e2etest.NewWith(t, o)}
		c.hosts[i].env.Start()
	}
	c.maps = openMaps(t)
	for i, h := range c.hosts {
		name := "crash-" + h.name
		h.env.Must("vlmc", "create", name, "--size", fmt.Sprintf("%dM", crashVolSize>>20))
		c.vols[name] = &cvol{name: name, host: i, sec: make([]sector, crashSectors)}
	}
	start := time.Now()
	for r := range rounds {
		t0 := time.Now()
		what := c.round(r)
		c.logf("round %d: %s (%v)", r, what, time.Since(t0).Round(time.Millisecond))
		if t.Failed() {
			break
		}
	}
	if !t.Failed() {
		c.verify(rounds, nil)
	}
	t.Logf("%d rounds in %v: %v", rounds, time.Since(start).Round(time.Millisecond), c.counts)
}

func (c *crashRun) newName(prefix string) string {
	c.seq++
	return fmt.Sprintf("%s-%04d", prefix, c.seq)
}

func (c *crashRun) nextPat() byte {
	c.pat = c.pat%254 + 1
	return c.pat
}

// own lists the volumes host i made, snapshots or not, in name order.
func (c *crashRun) own(i int, snap bool) []*cvol {
	var vs []*cvol
	for _, v := range c.vols {
		if v.host == i && v.snap == snap {
			vs = append(vs, v)
		}
	}
	slices.SortFunc(vs, func(a, b *cvol) int { return strings.Compare(a.name, b.name) })
	return vs
}

// write is one qemu-io write of the round.
type write struct {
	off int
	pat byte
}

// mgmt is one management operation of the round: vlmc args, and what to
// make of its outcome.
type mgmt struct {
	host int
	args []string
	err  error
	out  string
	// made is the volume it creates (snapshot or clone), gone the one it
	// removes.
	made *cvol
	gone string
}

// round runs round r and returns what it did.
func (c *crashRun) round(r int) string {
	t := c.t
	// What each host writes: one of its writable volumes, or one in four
	// times one of the other host's (whose lock its last writer gave
	// back), never the one the other host writes.
	var target [2]*cvol
	var writes [2][]write
	for i := range c.hosts {
		vs := c.own(i, false)
		if c.rng.IntN(4) == 0 {
			vs = c.own(1-i, false)
		}
		vs = slices.DeleteFunc(vs, func(v *cvol) bool { return v == target[0] })
		if len(vs) == 0 {
			vs = slices.DeleteFunc(append(c.own(0, false), c.own(1, false)...), func(v *cvol) bool { return v == target[0] })
		}
		target[i] = vs[c.rng.IntN(len(vs))]
		c.handOff(r, i, target[i])
		for range crashWrites {
			writes[i] = append(writes[i], write{off: c.rng.IntN(crashVolSize/crashRegion) * crashRegion, pat: c.nextPat()})
		}
	}
	// Management operations, planned before the round starts.
	var ops []*mgmt
	for i, h := range c.hosts {
		if c.rng.IntN(3) != 0 {
			continue
		}
		snaps, vols := c.own(i, true), c.own(i, false)
		var fixed []*cvol
		for _, v := range c.vols {
			if v.snap && v.fixed != nil {
				fixed = append(fixed, v)
			}
		}
		slices.SortFunc(fixed, func(a, b *cvol) int { return strings.Compare(a.name, b.name) })
		switch k := c.rng.IntN(3); {
		case k == 0 && len(snaps) < 3: // a snapshot of the volume written now
			v := target[i]
			s := &cvol{name: c.newName(v.name + "-snap"), host: i, snap: true, sec: make([]sector, crashSectors)}
			for j, sec := range v.sec {
				s.sec[j] = sector{acked: sec.acked, maybe: slices.Clone(sec.maybe)}
			}
			for _, w := range writes[i] {
				for j := w.off / crashSector; j < (w.off+crashRegion)/crashSector; j++ {
					s.sec[j].maybe = append(s.sec[j].maybe, w.pat)
				}
			}
			ops = append(ops, &mgmt{host: i, args: []string{"snapshot", v.name, s.name}, made: s})
		case k == 1 && len(fixed) > 0 && len(vols) < 3: // a clone of a snapshot read already
			p := fixed[c.rng.IntN(len(fixed))]
			cl := &cvol{name: c.newName("crash-clone-" + h.name), host: i, sec: make([]sector, crashSectors)}
			for j := range cl.sec {
				cl.sec[j].acked = p.fixed[j*crashSector]
			}
			ops = append(ops, &mgmt{host: i, args: []string{"create", cl.name, "--snap", p.name}, made: cl})
		default: // remove an old snapshot, or a clone not written now
			var cands []*cvol
			for _, v := range append(snaps, vols...) {
				if v != target[0] && v != target[1] && v.name != "crash-"+h.name {
					cands = append(cands, v)
				}
			}
			if len(cands) == 0 {
				continue
			}
			v := cands[c.rng.IntN(len(cands))]
			c.handOff(r, i, v)
			ops = append(ops, &mgmt{host: i, args: []string{"remove", v.name}, gone: v.name})
		}
	}
	// The victim: one peer of one host, or all of that host's.
	victim := c.rng.IntN(2)
	roles := c.hosts[victim].env.Cfg.Roles
	var kill []string
	if c.rng.IntN(5) == 0 {
		for _, ro := range roles {
			kill = append(kill, ro.Name)
		}
	} else {
		kill = []string{roles[c.rng.IntN(len(roles))].Name}
	}
	// A hosted role's kill is its host's: every role hosted with it.
	kill = c.hosts[victim].env.SameProcess(kill...)
	delay := time.Duration(c.rng.IntN(200)) * time.Millisecond

	var wg sync.WaitGroup
	var ioErr [2]error
	for i, h := range c.hosts {
		wg.Go(func() { ioErr[i] = c.qemuWrites(h, target[i].name, writes[i]) })
	}
	for _, op := range ops {
		wg.Go(func() { op.out, op.err = c.hosts[op.host].env.Run("vlmc", op.args...) })
	}
	var startOut string
	var startErr error
	wg.Go(func() {
		time.Sleep(delay)
		c.killRoles(c.hosts[victim], kill)
		startOut, startErr = c.hosts[victim].env.Run("archipelago", "start")
	})
	wg.Wait()
	if startErr != nil {
		t.Fatalf("round %d: archipelago start on %s after killing %v: %v\n%s", r, c.hosts[victim].name, kill, startErr, startOut)
	}
	c.counts["kill"]++
	if len(kill) == len(roles) {
		c.counts["host crash"]++
	}

	// The oracle: acknowledged writes replace, the others may be there.
	for i := range c.hosts {
		v := target[i]
		for _, w := range writes[i] {
			for j := w.off / crashSector; j < (w.off+crashRegion)/crashSector; j++ {
				if ioErr[i] == nil {
					v.sec[j] = sector{acked: w.pat}
				} else {
					v.sec[j].maybe = append(v.sec[j].maybe, w.pat)
				}
			}
		}
		v.lastWrite = fmt.Sprintf("round %d, from %s, which killed %v of %s", r, c.hosts[i].name, kill, c.hosts[victim].name)
		v.lastHostCrash = victim == i && len(kill) == len(roles)
		if ioErr[i] == nil {
			c.counts["acked writes"] += len(writes[i])
		} else {
			c.counts["failed writes"] += len(writes[i])
			c.logf("round %d: %s's writes to %s failed: %v", r, c.hosts[i].name, v.name, ioErr[i])
		}
	}
	// Management operations: a success must show; a failure may or may
	// not have happened (the listing decides).
	listed := c.list(r)
	for _, op := range ops {
		name := op.gone
		if op.made != nil {
			name = op.made.name
		}
		_, there := listed[name]
		switch {
		case op.err == nil && op.made != nil && !there:
			t.Fatalf("round %d: vlmc %s succeeded on %s but %s is not listed", r, strings.Join(op.args, " "), c.hosts[op.host].name, name)
		case op.err == nil && op.gone != "" && there:
			t.Fatalf("round %d: vlmc %s succeeded on %s but %s is still listed", r, strings.Join(op.args, " "), c.hosts[op.host].name, name)
		case op.err != nil && strings.Contains(op.out, "locked by"):
			t.Fatalf("round %d: vlmc %s on %s refused: %s", r, strings.Join(op.args, " "), c.hosts[op.host].name, op.out)
		}
		if op.err != nil {
			c.counts["failed "+op.args[0]]++
			c.logf("round %d: vlmc %s on %s failed (%s it): %v: %s", r, strings.Join(op.args, " "), c.hosts[op.host].name,
				map[bool]string{true: "did", false: "did not do"}[there == (op.made != nil)], op.err, strings.TrimSpace(op.out))
		} else {
			c.counts[op.args[0]]++
		}
		if op.made != nil && there {
			c.vols[name] = op.made
		}
		if op.gone != "" && !there {
			delete(c.vols, name)
		}
	}
	touched := map[string]bool{target[0].name: true, target[1].name: true}
	for _, op := range ops {
		if op.made != nil {
			touched[op.made.name] = true
		}
	}
	c.verify(r, touched)
	what := fmt.Sprintf("%s wrote %s, %s wrote %s, killed %v of %s after %v", c.hosts[0].name, target[0].name,
		c.hosts[1].name, target[1].name, kill, c.hosts[victim].name, delay)
	for _, op := range ops {
		what += fmt.Sprintf("; %s: vlmc %s", c.hosts[op.host].name, strings.Join(op.args, " "))
	}
	return what
}

// handOff makes volume v writable for host to without waiting: if the
// other host holds its lock, the other host closes it. (A host whose
// peers were all killed while it wrote keeps the lock when it restarts,
// by design: its client may reconnect and write on. Any other kill must
// leave no lock behind once the writer has gone: the log says which
// round left the lock, and such a lock fails the test. A blocker of the
// maps killed while the lock is given back makes the release fail: the
// mapper tries again every second, so the lock may go a little late.)
func (c *crashRun) handOff(r, to int, v *cvol) {
	h, o := c.hosts[to], c.hosts[1-to]
	var vi volclient.Info
	if err := json.Unmarshal([]byte(h.env.Must("vlmc", "info", "--json", v.name)), &vi); err != nil {
		c.t.Fatalf("round %d: vlmc info --json %s: %v", r, v.name, err)
	}
	if vi.LockOwner != o.name {
		return
	}
	if !v.lastHostCrash {
		// Left by the kill of a single peer: the writer has gone, and the
		// lock goes with it, at the latest when the mapper tries again a
		// release that failed while a blocker restarted (every second).
		deadline := time.Now().Add(10 * time.Second)
		for vi.LockOwner == o.name && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			if err := json.Unmarshal([]byte(h.env.Must("vlmc", "info", "--json", v.name)), &vi); err != nil {
				c.t.Fatalf("round %d: vlmc info --json %s: %v", r, v.name, err)
			}
		}
		if vi.LockOwner != o.name {
			c.counts["lock given back late"]++
			return
		}
		c.counts["lock left by a peer's kill"]++
		c.t.Errorf("round %d: %s still holds %s, last written in %s: a lock outlived its writer", r, o.name, v.name, v.lastWrite)
	}
	c.counts["hand-off"]++
	c.logf("round %d: %s holds %s (last written in %s): closed there for %s", r, o.name, v.name, v.lastWrite, h.name)
	o.env.Must("vlmc", "close", v.name)
}

// logf logs a line of the run (shown with -v or on failure).
func (c *crashRun) logf(format string, args ...any) { c.t.Logf(format, args...) }

// qemuWrites runs one qemu-io on host h: the writes, then a flush. Nil
// means all were acknowledged and flushed.
func (c *crashRun) qemuWrites(h *crashHost, vol string, ws []write) error {
	var cmds []string
	for _, w := range ws {
		cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", w.pat, w.off, crashRegion))
	}
	err := testutil.QemuIO(c.t, h.env.URI(vol), append(cmds, "flush")...)
	if errors.Is(err, context.DeadlineExceeded) {
		c.t.Errorf("qemu-io on %s (%s) still ran after %v (a killed peer blocks a client after its restart): %v", h.name, vol, testutil.RunLimit, err)
	}
	return err
}

// killRoles kills roles of host h with SIGKILL and waits for them to die.
func (c *crashRun) killRoles(h *crashHost, roles []string) {
	var pids []int
	for _, r := range roles {
		b, err := os.ReadFile(h.env.Cfg.PidFile(r))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		testutil.WaitFor(c.t, 10*time.Second, fmt.Sprintf("pid %d of %s to die", pid, h.name), func() bool { return !xseg.ProcessAlive(pid) })
	}
}

// list returns the volumes both hosts list; they must list the same.
func (c *crashRun) list(r int) map[string]bool {
	var lists [2]string
	for i, h := range c.hosts {
		lists[i] = h.env.Must("vlmc", "list")
	}
	if lists[0] != lists[1] {
		c.t.Fatalf("round %d: the hosts list different volumes:\n%s:\n%s\n%s:\n%s", r, c.hosts[0].name, lists[0], c.hosts[1].name, lists[1])
	}
	set := make(map[string]bool)
	for _, n := range strings.Fields(lists[0]) {
		set[n] = true
	}
	return set
}

// read returns volume name's content as host h reads it.
func (c *crashRun) read(h *crashHost, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nbdcopy", h.env.URI(name), "-")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("nbdcopy of %s on %s: %v\n%s", name, h.name, err, errb.String())
	}
	if out.Len() != crashVolSize {
		return nil, fmt.Errorf("nbdcopy of %s on %s: %d bytes, want %d", name, h.name, out.Len(), crashVolSize)
	}
	return out.Bytes(), nil
}

// verify reads volumes (those in touched, or all if touched is nil) from
// a random host and compares them with the oracle; it checks the
// listing and the maps.
func (c *crashRun) verify(r int, touched map[string]bool) {
	t := c.t
	listed := c.list(r)
	var names []string
	for n := range c.vols {
		names = append(names, n)
		if !listed[n] {
			t.Fatalf("round %d: %s is not listed", r, n)
		}
	}
	for n := range listed {
		if c.vols[n] == nil {
			t.Fatalf("round %d: %s is listed but was never made", r, n)
		}
	}
	slices.Sort(names)
	// The reads run two at a time (each host's nbdd serves one).
	type result struct {
		h   *crashHost
		got []byte
		err error
	}
	reads := make(map[string]*result)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for _, n := range names {
		if touched != nil && !touched[n] && r%20 != 19 {
			continue
		}
		res := &result{h: c.hosts[c.rng.IntN(2)]}
		reads[n] = res
		wg.Go(func() {
			sem <- struct{}{}
			res.got, res.err = c.read(res.h, n)
			<-sem
		})
	}
	wg.Wait()
	for _, n := range names {
		v, res := c.vols[n], reads[n]
		if res == nil {
			continue
		}
		if res.err != nil {
			t.Fatalf("round %d: %v", r, res.err)
		}
		h, got := res.h, res.got
		if v.fixed != nil {
			if !bytes.Equal(got, v.fixed) {
				i := 0
				for got[i] == v.fixed[i] {
					i++
				}
				t.Fatalf("round %d: snapshot %s changed (read on %s): byte %d is %d, was %d", r, n, h.name, i, got[i], v.fixed[i])
			}
			continue
		}
		for j, s := range v.sec {
			// A write is 16 whole sectors, and a killed process can tear
			// a write only between pages: every sector is one write's.
			sec := got[j*crashSector : (j+1)*crashSector]
			if bytes.Count(sec, sec[:1]) != len(sec) || !s.allows(sec[0]) {
				t.Fatalf("round %d: %s (read on %s) sector at %d holds %s; acknowledged %d, maybe %v",
					r, n, h.name, j*crashSector, sectorRuns(sec), s.acked, s.maybe)
			}
		}
		if v.snap {
			v.fixed, v.sec = got, nil
		}
		c.counts["reads"]++
	}
	if err := volume.Check(context.Background(), c.maps); err != nil {
		t.Fatalf("round %d: %v", r, err)
	}
}

// sectorRuns prints bytes as runs: "7*100 9*3996".
func sectorRuns(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] == b[i] {
			j++
		}
		fmt.Fprintf(&sb, "%d*%d ", b[i], j-i)
		i = j
	}
	return strings.TrimSpace(sb.String())
}
