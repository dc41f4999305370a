package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/mapdev"
)

// TestVlmcMapFromList: what archipelago-map.service runs. vlmc map --from
// maps every volume of a list (comments and blank lines skipped), again
// is a no-op that reports them already mapped, a volume that does not
// exist fails the command but not the others; vlmc unmap --from unmaps
// them (again: nothing to do), and unmap --all unmaps everything.
func TestVlmcMapFromList(t *testing.T) {
	e := startMapping(t)
	e.Must("vlmc", "create", "list-a", "--size", "64M")
	e.Must("vlmc", "create", "list-b", "--size", "32M")
	list := filepath.Join(e.Dir, "vlmcmap")
	os.WriteFile(list, []byte("# volumes to map at boot\n\nlist-a   # the first\n  list-b\n"), 0o644)

	mapped := func() map[string]string {
		t.Helper()
		var ms []mapdev.Mapping
		if err := json.Unmarshal([]byte(e.Must("vlmc", "showmapped", "--json")), &ms); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, m := range ms {
			if m.Status != "mapped" {
				t.Errorf("mapping %+v", m)
			}
			out[m.Volume] = m.Device
		}
		return out
	}
	line := regexp.MustCompile(`^(\S+) (/dev/loop\d+) (mapped|already-mapped)$`)
	check := func(out, how string) map[string]string {
		t.Helper()
		got := map[string]string{}
		for _, l := range strings.Split(out, "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil || m[3] != how {
				t.Errorf("vlmc map --from: line %q, want VOLUME DEVICE %s", l, how)
				continue
			}
			got[m[1]] = m[2]
		}
		if want := mapped(); len(got) != 2 || got["list-a"] != want["list-a"] || got["list-b"] != want["list-b"] {
			t.Errorf("vlmc map --from reported %v; showmapped says %v", got, want)
		}
		return got
	}
	first := check(e.Must("vlmc", "map", "--from", list), "mapped")
	for _, dev := range first {
		if fi, err := os.Stat(dev); err != nil || fi.Mode()&os.ModeDevice == 0 {
			t.Errorf("%s: %v %v", dev, fi, err)
		}
	}
	// Idempotent.
	if again := check(e.Must("vlmc", "map", "--from", list), "already-mapped"); again["list-a"] != first["list-a"] || again["list-b"] != first["list-b"] {
		t.Errorf("second map --from: %v, first %v", again, first)
	}
	// One volume missing: reported, exit non-zero, the others stay.
	bad := filepath.Join(e.Dir, "vlmcmap.bad")
	os.WriteFile(bad, []byte("list-a\nno-such-volume\nlist-b\n"), 0o644)
	cmd := exec.Command(testbin.Path(t, "vlmc"), "--config", e.Config, "map", "--from", bad)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "no-such-volume: ") ||
		!strings.Contains(stderr.String(), "1 of 3 volume(s) not mapped") || strings.Count(stdout.String(), "already-mapped") != 2 {
		t.Errorf("map --from with a missing volume: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	// A malformed list maps nothing and names the line.
	os.WriteFile(bad, []byte("list-a\nlist-b rw\n"), 0o644)
	if out, err := e.Run("vlmc", "map", "--from", bad); err == nil || !strings.Contains(out, bad+":2:") {
		t.Errorf("map --from a malformed list: %v\n%s", err, out)
	}

	out := e.Must("vlmc", "unmap", "--from", list)
	if want := "list-b " + first["list-b"] + " unmapped\nlist-a " + first["list-a"] + " unmapped"; out != want {
		t.Errorf("unmap --from:\n%s\nwant:\n%s", out, want)
	}
	if m := mapped(); len(m) != 0 {
		t.Errorf("still mapped after unmap --from: %v", m)
	}
	if out := e.Must("vlmc", "unmap", "--from", list); out != "list-b - not-mapped\nlist-a - not-mapped" {
		t.Errorf("second unmap --from:\n%s", out)
	}
	check(e.Must("vlmc", "map", "--from", list), "mapped")
	if out := e.Must("vlmc", "unmap", "--all"); strings.Count(out, " unmapped") != 2 {
		t.Errorf("unmap --all:\n%s", out)
	}
	if m := mapped(); len(m) != 0 {
		t.Errorf("still mapped after unmap --all: %v", m)
	}
}
