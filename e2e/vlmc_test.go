package e2e_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/volclient"
)

func TestVlmcVolumeCommands(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	e.Must("vlmc", "create", "image01", "--size", "512") // MiB, as in the original
	e.Must("vlmc", "snapshot", "image01", "image01-snap")
	e.Must("vlmc", "create", "vm-disk-1", "--snap", "image01-snap")
	e.Must("vlmc", "create", "vm-disk-2", "--snap", "image01-snap", "--size", "1G")
	if got := e.Must("vlmc", "list"); got != "image01\nimage01-snap\nvm-disk-1\nvm-disk-2" {
		t.Errorf("list:\n%s", got)
	}
	var vols []volclient.Info
	if err := json.Unmarshal([]byte(e.Must("vlmc", "list", "--json")), &vols); err != nil || len(vols) != 4 {
		t.Fatalf("list --json: %v %+v", err, vols)
	}
	var vi volclient.Info
	if err := json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", "vm-disk-2")), &vi); err != nil {
		t.Fatal(err)
	}
	if vi.Name != "vm-disk-2" || vi.Size != 1<<30 || vi.ReadOnly || vi.Parent != "image01-snap" || vi.LockOwner != "" {
		t.Errorf("info --json: %+v", vi)
	}
	info := e.Must("vlmc", "info", "image01-snap")
	if !strings.Contains(info, "512M (536870912 bytes)") || !strings.Contains(info, "snapshot (read-only)") {
		t.Errorf("info:\n%s", info)
	}
	e.Must("vlmc", "rename", "vm-disk-1", "vm-disk-one")
	e.Must("vlmc", "resize", "vm-disk-one", "--size", "2G")
	json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", "vm-disk-one")), &vi)
	if vi.Size != 2<<30 {
		t.Errorf("size after resize: %d", vi.Size)
	}
	e.Must("vlmc", "lock", "vm-disk-one")
	e.Must("vlmc", "lock", "vm-disk-one") // idempotent for the holder
	json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", "vm-disk-one")), &vi)
	if vi.LockOwner != "host-a" {
		t.Errorf("lock owner %q", vi.LockOwner)
	}
	e.Must("vlmc", "unlock", "vm-disk-one")
	e.Must("vlmc", "open", "vm-disk-one")
	e.Must("vlmc", "open", "vm-disk-one") // succeeds when already ours
	e.Must("vlmc", "close", "vm-disk-one")
	uri := e.Must("vlmc", "uri", "vm-disk-2")
	if uri != "nbd+unix:///vm-disk-2?socket="+e.Socket() {
		t.Errorf("uri %q", uri)
	}
	e.Must("archipelago", "restart")
	if got := e.Must("vlmc", "uri", "vm-disk-2"); got != uri {
		t.Errorf("uri changed across restart: %q then %q", uri, got)
	}
	e.Must("vlmc", "remove", "vm-disk-2")
	if got := e.Must("vlmc", "list"); strings.Contains(got, "vm-disk-2") {
		t.Errorf("removed volume still listed:\n%s", got)
	}
}

// Every failure exits non-zero with one line naming the volume and the
// cause.
func TestVlmcErrors(t *testing.T) {
	a, b := e2etest.TwoHosts(t, e2etest.Options{})
	// Not running yet.
	fails(t, a, []string{"create", "volume1", "--size", "1G"}, "start it with `archipelago start`")
	a.Start()
	b.Start()
	a.Must("vlmc", "create", "volume1", "--size", "1G")
	a.Must("vlmc", "snapshot", "volume1", "volume1-snap")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"info", "nosuchvolume"}, `"nosuchvolume"`},
		{[]string{"info", "nosuchvolume"}, "not found"},
		{[]string{"remove", "nosuchvolume"}, "not found"},
		{[]string{"create", "volume1", "--size", "1G"}, "already exists"},
		{[]string{"create", "bad\nname", "--size", "1G"}, "control character"},
		{[]string{"create", "volume2"}, "give --size, --snap or both"},
		{[]string{"create", "volume2", "--size", "lots"}, `size "lots"`},
		{[]string{"create", "volume2", "--snap", "volume1-snap", "--size", "1M"}, "volume2"},
		{[]string{"create", "volume2", "--snap", "nosuchsnap"}, "not found"},
		{[]string{"create", "volume2", "--snap", "volume1"}, "volume1"}, // not a snapshot
		{[]string{"snapshot", "volume1", "volume1-snap"}, "already exists"},
		{[]string{"resize", "volume1", "--size", "512M"}, "volume1"}, // shrink without --force
		{[]string{"rename", "volume1", "volume1-snap"}, "already exists"},
		{[]string{"unlock", "volume1"}, "volume1"}, // not locked
	} {
		fails(t, a, c.args, c.want)
	}
	// Locked by another host.
	a.Must("vlmc", "lock", "volume1")
	fails(t, b, []string{"lock", "volume1"}, "locked by host-a")
	fails(t, b, []string{"snapshot", "volume1", "volume1-s2"}, "locked by host-a")
	fails(t, b, []string{"remove", "volume1"}, "locked by host-a")
	fails(t, b, []string{"unlock", "volume1"}, "volume1")
	b.Must("vlmc", "info", "volume1") // reads go on
	b.Must("vlmc", "unlock", "-f", "volume1")
	b.Must("vlmc", "lock", "volume1")
	fails(t, a, []string{"open", "volume1"}, "locked by host-b")
}

func fails(t *testing.T, e *e2etest.Env, args []string, want string) {
	t.Helper()
	out, err := e.Run("vlmc", args...)
	if err == nil {
		t.Errorf("vlmc %s succeeded:\n%s", strings.Join(args, " "), out)
		return
	}
	out = strings.TrimSpace(out)
	if strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "vlmc: ") || !strings.Contains(out, want) {
		t.Errorf("vlmc %s: want one line with %q, got:\n%s", strings.Join(args, " "), want, out)
	}
}
