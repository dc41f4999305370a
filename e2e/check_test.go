package e2e_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// vlmc check through the real programs: storage damaged by hand (files
// here, RADOS objects in check_ceph_test.go) is named, problem by
// problem; a check on one host while another writes finds nothing.

// ckHand reaches a host's storage by hand, bypassing the peers: store is
// "maps" or "data".
type ckHand interface {
	list(t *testing.T, store string) []string
	read(t *testing.T, store, name string) []byte
	write(t *testing.T, store, name string, b []byte) // the whole object
	remove(t *testing.T, store, name string)
}

// ckFiles is the storage of a filestore directory pair.
type ckFiles struct{ dirs map[string]string }

func ckFilesOf(e *e2etest.Env) ckFiles {
	return ckFiles{dirs: map[string]string{"maps": e.Dir + "/maps", "data": e.Dir + "/data"}}
}

// path finds object name's file (filestore spreads them in AA/BB
// directories; see store/filestore/layout.go).
func (f ckFiles) path(t *testing.T, store, name string) string {
	t.Helper()
	var found string
	err := filepath.WalkDir(f.dirs[store], func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "locks" || d.Name() == "tmp") {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == name {
			found = p
			return fs.SkipAll
		}
		return nil
	})
	if err != nil || found == "" {
		t.Fatalf("%s object %s: no file (%v)", store, name, err)
	}
	return found
}

func (f ckFiles) list(t *testing.T, store string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(f.dirs[store], func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "locks" || d.Name() == "tmp") {
			return filepath.SkipDir
		}
		if !d.IsDir() && filepath.Dir(filepath.Dir(filepath.Dir(p))) == f.dirs[store] {
			names = append(names, d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func (f ckFiles) read(t *testing.T, store, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(f.path(t, store, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// write writes in place (the peers may hold the file open).
func (f ckFiles) write(t *testing.T, store, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(f.path(t, store, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f ckFiles) remove(t *testing.T, store, name string) {
	t.Helper()
	if err := os.Remove(f.path(t, store, name)); err != nil {
		t.Fatal(err)
	}
}

// ckObject finds the one object of names whose name matches re.
func ckObject(t *testing.T, names []string, re string) string {
	t.Helper()
	var found []string
	for _, n := range names {
		if regexp.MustCompile(re).MatchString(n) {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		t.Fatalf("objects matching %s: %q", re, found)
	}
	return found[0]
}

// ckFlip damages object name of the maps store: one byte XORed at each
// offset.
func ckFlip(t *testing.T, h ckHand, name string, offs ...int) {
	t.Helper()
	b := h.read(t, "maps", name)
	for _, off := range offs {
		b[off] ^= 0xff
	}
	h.write(t, "maps", name, b)
}

// ckRun runs vlmc of env e: its stdout, stderr and exit status.
func ckRun(t *testing.T, e *e2etest.Env, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testbin.Path(t, "vlmc"), append([]string{"--config", e.Config}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("vlmc %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// ckCheckJSON runs vlmc check --json and decodes its report.
func ckCheckJSON(t *testing.T, e *e2etest.Env, args ...string) (*volclient.CheckReport, int) {
	t.Helper()
	out, errOut, code := ckRun(t, e, append([]string{"check", "--json"}, args...)...)
	var rep volclient.CheckReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("vlmc check --json (status %d): %v\n%s%s", code, err, out, errOut)
	}
	return &rep, code
}

// ckProblems is the set of "volume kind object" of a report.
func ckProblems(r *volclient.CheckReport) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.Volume+" "+p.Kind+" "+p.Object)
	}
	slices.Sort(out)
	return out
}

// TestCheckNamesDamageInFiles damages the files of a host's storage by
// hand, one way per volume, and checks that vlmc check names each
// (volume, kind, object), in its lines and in --json, with exit status 1;
// 0 before the damage, 2 for a volume that does not exist.
func TestCheckNamesDamageInFiles(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	checkNamesDamage(t, e, ckFilesOf(e))
}

// checkNamesDamage is TestCheckNamesDamageInFiles on any storage.
func checkNamesDamage(t *testing.T, e *e2etest.Env, h ckHand) {
	testutil.NeedBinaries(t, "qemu-io")
	for _, v := range []string{"vol", "other", "third", "fourth"} {
		e.Must("vlmc", "create", v, "--size", "64M")
		if err := testutil.QemuIO(t, e.URI(v), "write -P 1 0 64k", "write -P 2 40M 64k"); err != nil {
			t.Fatal(err)
		}
	}
	e.Must("vlmc", "snapshot", "vol", "vol-snap")
	if err := testutil.QemuIO(t, e.URI("vol"), "write -P 3 0 64k"); err != nil { // block 0 copied on write
		t.Fatal(err)
	}
	out, _, code := ckRun(t, e, "check")
	if code != 0 || !strings.Contains(out, "checked 5 volumes") || !strings.Contains(out, "no problems found") {
		t.Fatalf("vlmc check before any damage: status %d\n%s", code, out)
	}

	// 64 MiB of 4 MiB blocks: one map page per volume, the root.
	mapsObjects := h.list(t, "maps")
	leaf := func(v string) string { return ckObject(t, mapsObjects, "^"+v+"_[0-9a-f]{16}_m0_0{16}$") }
	otherLeaf, thirdLeaf := leaf("other"), leaf("third")
	// Block 10 (at 40 MiB), written before the snapshot: shared.
	shared := ckObject(t, h.list(t, "data"), "^vol_[0-9a-f]{16}_0{15}a$")
	const slot, page, head = 8192, 4160, 20 // a header's and a page's slot, a slot's head
	ckFlip(t, h, "vol", slot+head+30)       // one copy of vol's header
	h.remove(t, "maps", otherLeaf)          // other's only page
	ckFlip(t, h, thirdLeaf, 100, page+100)  // both copies of third's page
	h.remove(t, "data", shared)             // a data object of vol and vol-snap
	h.remove(t, "maps", "fourth_epoch")     // fourth's epoch record
	want := []string{
		"fourth epoch-missing fourth_epoch",
		"other dangling " + otherLeaf,
		"third unreadable " + thirdLeaf,
		"vol damaged-copy vol",
		"vol missing-data " + shared,
		"vol-snap missing-data " + shared,
	}
	slices.Sort(want)

	out, errOut, code := ckRun(t, e, "check")
	if code != 1 || !strings.Contains(out, "checked 5 volumes") || !strings.Contains(out, "6 problems found") ||
		!strings.Contains(errOut, "6 problems found") {
		t.Fatalf("vlmc check: status %d\n%s%s", code, out, errOut)
	}
	for _, w := range want {
		f := strings.Fields(w) // volume kind object
		if !strings.Contains(out, f[0]+": "+f[1]+": "+f[2]+": ") {
			t.Errorf("vlmc check does not name %s:\n%s", w, out)
		}
	}
	t.Logf("vlmc check:\n%s", out)
	rep, code := ckCheckJSON(t, e)
	if got := ckProblems(rep); code != 1 || !slices.Equal(got, want) || rep.Volumes != 5 {
		t.Fatalf("vlmc check --json: status %d, %d volumes, problems\n%s\nwant\n%s",
			code, rep.Volumes, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Named volumes: only theirs.
	rep, code = ckCheckJSON(t, e, "other", "vol-snap")
	if got := ckProblems(rep); code != 1 || !slices.Equal(got, []string{want[1], want[5]}) {
		t.Fatalf("vlmc check other vol-snap: status %d, %q", code, got)
	}
	// Could not check.
	if out, errOut, code := ckRun(t, e, "check", "nosuch"); code != 2 || !strings.Contains(errOut, `"nosuch"`) || !strings.Contains(errOut, "not found") {
		t.Fatalf("vlmc check nosuch: status %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := ckRun(t, e, "check", "--no-such-flag"); code != 2 {
		t.Fatalf("vlmc check --no-such-flag: status %d\n%s", code, errOut)
	}
}

// TestCheckWhileAnotherHostWrites: host A writes a volume through NBD
// (first writes of zero blocks, so map pages change), takes snapshots of
// it and removes older ones, while host B checks the pool: no check finds
// anything, and neither does one once A is quiet.
func TestCheckWhileAnotherHostWrites(t *testing.T) {
	checkWhileWriting(t, e2etest.Options{})
}

func checkWhileWriting(t *testing.T, o e2etest.Options) {
	testutil.NeedBinaries(t, "qemu-io")
	a, b := e2etest.TwoHosts(t, o)
	a.Start()
	b.Start()
	a.Must("vlmc", "create", "busy", "--size", "1G")
	a.Must("vlmc", "create", "quiet", "--size", "64M")
	if err := testutil.QemuIO(t, a.URI("quiet"), "write -P 9 0 1M"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr error
	rounds := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var cmds []string
			for j := range 24 { // 24 blocks of 256 (4 MiB each), new ones first
				off := ((i*24+j)*37%256)<<22 + (j%4)<<16
				cmds = append(cmds, fmt.Sprintf("write -P %d %d 64k", 1+(i+j)%250, off))
			}
			if err := testutil.QemuIO(t, a.URI("busy"), append(cmds, "flush")...); err != nil {
				writeErr = err
				return
			}
			if _, err := a.Run("vlmc", "snapshot", "busy", fmt.Sprintf("busy-%d", i)); err != nil {
				writeErr = err
				return
			}
			if i >= 2 {
				if _, err := a.Run("vlmc", "remove", fmt.Sprintf("busy-%d", i-2)); err != nil {
					writeErr = err
					return
				}
			}
			rounds++
		}
	}()
	checks := 0
	deadline := time.Now().Add(5 * time.Second)
	for ; checks < 4 || time.Now().Before(deadline) && checks < 8; checks++ {
		rep, code := ckCheckJSON(t, b)
		if code != 0 || len(rep.Problems) != 0 {
			close(stop)
			wg.Wait()
			t.Fatalf("check %d on B while A writes: status %d, %+v", checks, code, rep.Problems)
		}
	}
	close(stop)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	if rounds == 0 {
		t.Fatal("A wrote nothing during the checks")
	}
	if rep, code := ckCheckJSON(t, b); code != 0 || len(rep.Problems) != 0 || rep.Volumes < 3 {
		t.Fatalf("check on B once A is quiet: status %d, %+v", code, rep)
	}
	t.Logf("%d checks on B during %d rounds of writes and snapshots on A", checks, rounds)
}
