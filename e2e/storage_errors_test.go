package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// objectFiles returns the files below dir whose names match re.
func objectFiles(t *testing.T, dir string, re *regexp.Regexp) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && re.MatchString(d.Name()) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// logOf is a role's log.
func logOf(e *e2etest.Env, role string) string {
	b, _ := os.ReadFile(e.Cfg.LogFile(role))
	return string(b)
}

// TestStorageErrorsLogged: storage that fails (an immutable object: even
// reads fail; a map page deleted; a map page damaged in both copies) fails the client's I/O, and the log of
// the peer where it failed names the object and the error.
func TestStorageErrorsLogged(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	e := e2etest.New(t, "host-a", "")
	e.Start()
	e.Must("vlmc", "create", "vol-eio", "--size", "16M")
	e.Must("vlmc", "create", "vol-nopage", "--size", "16M")
	e.Must("vlmc", "create", "vol-badpage", "--size", "16M")
	for _, v := range []string{"vol-eio", "vol-nopage", "vol-badpage"} {
		if err := testutil.QemuIO(t, e.URI(v), "write -P 0xab 0 1M", "flush"); err != nil {
			t.Fatal(err)
		}
	}
	// Restart, so that no peer holds a file open from before the damage.
	e.Must("archipelago", "restart")

	// An immutable data object.
	data := objectFiles(t, filepath.Join(e.Dir, "data"), regexp.MustCompile(`.`))
	if len(data) == 0 {
		t.Fatal("no data object written")
	}
	var immutable []string
	for _, f := range data {
		if out, err := exec.Command("chattr", "+i", f).CombinedOutput(); err != nil {
			t.Skipf("chattr +i not supported here: %v %s", err, out)
		}
		immutable = append(immutable, f)
	}
	t.Cleanup(func() {
		for _, f := range immutable {
			exec.Command("chattr", "-i", f).Run()
		}
	})
	if err := testutil.QemuIO(t, e.URI("vol-eio"), "read -P 0xab 0 64k"); err == nil {
		t.Fatal("read of an immutable object succeeded")
	}
	log := logOf(e, "blockerb")
	found := false
	for _, f := range immutable {
		if strings.Contains(log, filepath.Base(f)) {
			found = true
		}
	}
	if !found || !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "errno=EPERM") || !strings.Contains(log, "op=READ") {
		t.Errorf("blockerb's log does not name the object and the error of a failed read:\n%s", log)
	}
	for _, f := range immutable {
		exec.Command("chattr", "-i", f).Run()
	}

	// A deleted map page (a leaf: level 0) of vol-nopage.
	pages := objectFiles(t, filepath.Join(e.Dir, "maps"), regexp.MustCompile(`_m0_[0-9a-f]{16}$`))
	leaf := func(vol string) string {
		t.Helper()
		for _, p := range pages {
			if strings.HasPrefix(filepath.Base(p), vol+"_") {
				return p
			}
		}
		t.Fatalf("no leaf map page of %s among %v", vol, pages)
		return ""
	}
	page, bad := leaf("vol-nopage"), leaf("vol-badpage")
	e.Must("archipelago", "restart")
	if err := os.Remove(page); err != nil {
		t.Fatal(err)
	}
	// Both copies of a page damaged: every byte of the file.
	fi, err := os.Stat(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.Repeat("\xa5", int(fi.Size()))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := testutil.QemuIO(t, e.URI("vol-badpage"), "read -P 0xab 0 64k"); err == nil {
		t.Fatal("read through a damaged map page succeeded")
	}
	if mlog := logOf(e, "mapperd"); !strings.Contains(mlog, "vol-badpage") || !strings.Contains(mlog, filepath.Base(bad)) {
		t.Errorf("mapperd's log does not name the volume and the damaged page %s:\n%s", filepath.Base(bad), mlog)
	}
	err = testutil.QemuIO(t, e.URI("vol-nopage"), "read -P 0xab 0 64k")
	if err == nil {
		t.Fatal("read through a deleted map page succeeded")
	}
	mlog := logOf(e, "mapperd")
	if !strings.Contains(mlog, "vol-nopage") || !strings.Contains(mlog, filepath.Base(page)) {
		t.Errorf("mapperd's log does not name the volume and the missing page %s:\n%s", filepath.Base(page), mlog)
	}
	if !t.Failed() {
		return
	}
	t.Logf("client: %v", err)
	for _, r := range e.Cfg.Roles {
		for _, l := range strings.Split(logOf(e, r.Name), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				t.Logf("%s: %s", r.Name, l)
			}
		}
	}
}
