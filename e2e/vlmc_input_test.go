package e2e_test

import (
	"encoding/json"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/volclient"
)

// TestVlmcSizeUnits: `--size` takes only the units it documents. "1E" is
// 1 EiB (it was read as 1 MiB: `resize --size 1E --force`, meant to grow,
// shrank a 100 MiB volume to 1 MiB); an unknown unit or a size beyond the
// volume limit is an error naming the volume and the input, and leaves
// the volume as it was.
func TestVlmcSizeUnits(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	e.Must("vlmc", "create", "volume1", "--size", "100")
	size := func() uint64 {
		t.Helper()
		var vi volclient.Info
		if err := json.Unmarshal([]byte(e.Must("vlmc", "info", "--json", "volume1")), &vi); err != nil {
			t.Fatal(err)
		}
		return vi.Size
	}
	for _, c := range []struct {
		size, want string
	}{
		{"5X", `size "5X"`},
		{"1Z", `size "1Z"`},
		{"10GX", `size "10GX"`},
		{"1.5G", `size "1.5G"`},
		{"2E", "beyond the limit of 1E"},
		{"16E", `size "16E"`},
	} {
		fails(t, e, []string{"resize", "volume1", "--size", c.size, "--force"}, c.want)
		fails(t, e, []string{"resize", "volume1", "--size", c.size, "--force"}, `volume "volume1"`)
		fails(t, e, []string{"create", "volume2", "--size", c.size}, `volume "volume2"`)
		if got := size(); got != 100<<20 {
			t.Fatalf("after resize --size %s: size %d, want 100 MiB", c.size, got)
		}
	}
	e.Must("vlmc", "resize", "volume1", "--size", "1E", "--force")
	if got := size(); got != 1<<60 {
		t.Fatalf("after resize --size 1E: size %d, want 1 EiB", got)
	}
	e.Must("vlmc", "resize", "volume1", "--size", "3GiB", "--force")
	if got := size(); got != 3<<30 {
		t.Fatalf("after resize --size 3GiB: size %d, want 3 GiB", got)
	}
}

// TestVlmcNames: a name with a newline, a tab, a space or a '/' is
// refused with an error naming it (a newline made `vlmc list` show
// volumes that do not exist); a short name is a name like any other.
func TestVlmcNames(t *testing.T) {
	e := e2etest.New(t, "host-a", "")
	e.Start()
	e.Must("vlmc", "create", "ab", "--size", "1")
	e.Must("vlmc", "create", "x", "--size", "1")
	for _, name := range []string{"new\nline", "x\ny", "tab\tname", "two words", "a/b", "bad\xffutf8", "zero\u200bwidth"} {
		fails(t, e, []string{"create", name, "--size", "1"}, "volume name")
		fails(t, e, []string{"rename", "ab", name}, "volume name")
		fails(t, e, []string{"snapshot", "ab", name}, "volume name")
	}
	e.Must("vlmc", "snapshot", "ab", "s")
	if got := e.Must("vlmc", "list"); got != "ab\ns\nx" {
		t.Errorf("list:\n%s", got)
	}
}
