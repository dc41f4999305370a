package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
)

// Tests with the real NBD clients (qemu-utils: qemu-io, qemu-img;
// libnbd-bin: nbdinfo, nbdcopy) against a MemBackend served on a Unix
// socket by the test process.

// countingBackend counts Open calls per export, to see multi-conn at work.
type countingBackend struct {
	*MemBackend
	mu    sync.Mutex
	opens map[string]int
}

func (c *countingBackend) Open(ctx context.Context, name string) (Export, error) {
	c.mu.Lock()
	c.opens[name]++
	c.mu.Unlock()
	return c.MemBackend.Open(ctx, name)
}

func TestNbdinfo(t *testing.T) {
	testutil.NeedBinaries(t, "nbdinfo")
	m := memWith(t, map[string]MemOptions{
		"vol":  {Description: "a volume"},
		"snap": {ReadOnly: true},
		"b4k":  {MinBlock: 4096},
	}, 64<<20)
	ts := startServer(t, m, Options{})

	var list struct {
		Protocol   string           `json:"protocol"`
		Structured bool             `json:"structured"`
		Exports    []map[string]any `json:"exports"`
	}
	out := testutil.Run(t, "nbdinfo", "--list", "--json", nbduri.URI(ts.sock, ""))
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	if list.Protocol != "newstyle-fixed" || !list.Structured || len(list.Exports) != 3 {
		t.Fatalf("nbdinfo --list: %s", out)
	}
	byName := map[string]map[string]any{}
	for _, e := range list.Exports {
		byName[e["export-name"].(string)] = e
	}

	info := func(name string) map[string]any {
		out := testutil.Run(t, "nbdinfo", "--json", nbduri.URI(ts.sock, name))
		var v struct{ Exports []map[string]any }
		if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Exports) != 1 {
			t.Fatalf("nbdinfo --json %s: %v\n%s", name, err, out)
		}
		return v.Exports[0]
	}
	vol := info("vol")
	for k, want := range map[string]any{
		"export-size":          float64(64 << 20),
		"description":          "a volume",
		"is_read_only":         false,
		"can_flush":            true,
		"can_fua":              true,
		"can_trim":             true,
		"can_zero":             true,
		"can_multi_conn":       true,
		"can_df":               true,
		"block_size_minimum":   float64(1),
		"block_size_preferred": float64(4096),
		"block_size_maximum":   float64(32 << 20),
	} {
		if vol[k] != want {
			t.Errorf("vol: %s = %v, want %v", k, vol[k], want)
		}
	}
	if fmt.Sprint(vol["contexts"]) != "[base:allocation]" {
		t.Errorf("vol: contexts %v", vol["contexts"])
	}
	snap := info("snap")
	if snap["is_read_only"] != true || snap["can_trim"] != false || snap["can_zero"] != false {
		t.Errorf("snap: read-only %v trim %v zero %v", snap["is_read_only"], snap["can_trim"], snap["can_zero"])
	}
	if b := info("b4k"); b["block_size_minimum"] != float64(4096) {
		t.Errorf("b4k: minimum block %v", b["block_size_minimum"])
	}
	for _, name := range []string{"vol", "snap", "b4k"} {
		if byName[name]["export-size"] != float64(64<<20) {
			t.Errorf("--list: %s: %v", name, byName[name])
		}
	}
	if out, err := testutil.RunErr(t, "nbdinfo", nbduri.URI(ts.sock, "nope")); err == nil {
		t.Errorf("nbdinfo of an unknown export succeeded:\n%s", out)
	}
}

// mapOf runs nbdinfo --map and returns its extents as "off len flags".
func mapOf(t *testing.T, uri string) []string {
	t.Helper()
	var ext []string
	for _, l := range strings.Split(strings.TrimSpace(testutil.Run(t, "nbdinfo", "--map", uri)), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("nbdinfo --map line %q", l)
		}
		ext = append(ext, f[0]+" "+f[1]+" "+f[2])
	}
	return ext
}

func TestQemuIO(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdinfo")
	m := memWith(t, map[string]MemOptions{"vol": {}, "b4k": {MinBlock: 4096}}, 64<<20)
	ts := startServer(t, m, Options{})
	uri := nbduri.URI(ts.sock, "vol")

	if got := mapOf(t, uri); fmt.Sprint(got) != "[0 67108864 3]" {
		t.Fatalf("map of an unwritten export: %v", got)
	}

	const M = 1 << 20
	cmds := []string{
		"write -P 0xab 0 1M",
		"read -P 0xab 0 1M",
		"write -P 0xcd 2M 2M",
		"discard 3M 1M", // frees the second half
		"write -P 0x5a 8M 1M",
		"write -z -u 8M 512k", // may free: a hole again
		"write -z 9M 1M",      // NO_HOLE: allocated zeroes
		"read -P 0 8M 512k",
		"read -P 0x5a 8704k 512k",
		"read -P 0 9M 1M",
		"write -P 0x22 12345 1000", // unaligned
		"read -P 0x22 12345 1000",
		"write -f -P 0x33 12M 64k", // FUA
		"flush",
	}
	// Many writes in flight at once, then a flush.
	for i := range 64 {
		cmds = append(cmds, fmt.Sprintf("aio_write -P %d %d 64k", 0x40+i%32, 16*M+i*128<<10))
	}
	cmds = append(cmds, "aio_flush")
	for i := range 64 {
		cmds = append(cmds, fmt.Sprintf("read -P %d %d 64k", 0x40+i%32, 16*M+i*128<<10))
	}
	cmds = append(cmds, "read -P 0 32M 1M")
	if err := testutil.QemuIO(t, uri, cmds...); err != nil {
		t.Fatal(err)
	}
	// A wrong pattern is noticed (the check above is not vacuous).
	if out, err := testutil.RunErr(t, "qemu-io", "-f", "raw", uri, "-c", "read -P 0x99 0 4k"); err == nil || !strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("wrong pattern not detected: %v\n%s", err, out)
	}

	got := mapOf(t, uri)
	want := []string{
		"0 1048576 0",        // 0xab
		"1048576 1048576 3",  // never written
		"2097152 1048576 0",  // 0xcd
		"3145728 5767168 3",  // discarded, never written, zeroed with unmap allowed
		"8912896 1572864 0",  // 0x5a half, then NO_HOLE zeroes
		"10485760 2097152 3", // never written
		"12582912 65536 0",   // FUA write
	}
	if fmt.Sprint(got[:len(want)]) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --map:\n%s\nwant prefix:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if last := got[len(got)-1]; !strings.HasSuffix(last, " 3") || !strings.HasPrefix(last, strconv.Itoa(16*M+63*128<<10+64<<10)+" ") {
		t.Fatalf("map tail %q: want a hole after the aio writes", last)
	}
	// Unaligned write at 12345 allocated its pages only.
	e, _ := m.Open(context.Background(), "vol")
	p := make([]byte, 1000)
	e.ReadAt(context.Background(), p, 12345)
	if !bytes.Equal(p, bytes.Repeat([]byte{0x22}, 1000)) {
		t.Fatal("backend does not hold the unaligned write")
	}

	// An export with 4 KiB blocks: qemu honours the advertised minimum
	// and does read-modify-write for a small unaligned write.
	if err := testutil.QemuIO(t, nbduri.URI(ts.sock, "b4k"),
		"write -P 0x77 100 512", "read -P 0x77 100 512", "read -P 0 0 100", "read -P 0 612 3484"); err != nil {
		t.Fatalf("on a 4k export: %v", err)
	}
}

func TestCopyRoundTrip(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-img", "nbdcopy", "nbdinfo")
	const size = 64 << 20
	b := &countingBackend{MemBackend: memWith(t, map[string]MemOptions{"a": {}, "b": {}}, size), opens: map[string]int{}}
	ts := startServer(t, b, Options{})
	dir := t.TempDir()

	// A sparse source: random data in 1 MiB runs, holes in between.
	src := filepath.Join(dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	chunk := make([]byte, 1<<20)
	for i := 0; i < size>>20; i++ {
		if i%4 == 3 {
			continue
		}
		rand.Read(chunk)
		f.WriteAt(chunk, int64(i)<<20)
	}
	f.Close()
	sum := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(data))
	}
	want := sum(src)

	testutil.Run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, nbduri.URI(ts.sock, "a"))
	out1 := filepath.Join(dir, "out1.img")
	testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", nbduri.URI(ts.sock, "a"), out1)
	if got := sum(out1); got != want {
		t.Fatalf("qemu-img round trip: sha256 %s, want %s", got, want)
	}

	testutil.Run(t, "nbdcopy", "--connections=4", "--threads=4", "--requests=16", src, nbduri.URI(ts.sock, "b"))
	out2 := filepath.Join(dir, "out2.img")
	testutil.Run(t, "nbdcopy", "--connections=4", "--threads=4", nbduri.URI(ts.sock, "b"), out2)
	if got := sum(out2); got != want {
		t.Fatalf("nbdcopy round trip: sha256 %s, want %s", got, want)
	}
	b.mu.Lock()
	opens := b.opens["b"]
	b.mu.Unlock()
	if opens < 8 {
		t.Errorf("nbdcopy --connections=4 opened export b %d times in two copies: multi-conn not used", opens)
	}
	// The source's holes stay holes.
	holes := 0
	for _, e := range mapOf(t, nbduri.URI(ts.sock, "b")) {
		if strings.HasSuffix(e, " 3") {
			holes++
		}
	}
	if holes < size>>22 {
		t.Errorf("export b has %d holes after copying a source with %d", holes, size>>22)
	}
}

func TestReadOnlyRealClients(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdcopy")
	m := memWith(t, map[string]MemOptions{"snap": {}}, 4<<20)
	e, _ := m.Open(context.Background(), "snap")
	e.WriteAt(context.Background(), bytes.Repeat([]byte{0x5a}, 1<<20), 0, false)
	m.SetReadOnly("snap", true)
	ts := startServer(t, m, Options{})
	uri := nbduri.URI(ts.sock, "snap")

	if err := testutil.QemuIOReadOnly(t, uri, "read -P 0x5a 0 1M", "read -P 0 1M 3M"); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunErr(t, "qemu-io", "-f", "raw", uri, "-c", "write 0 4k"); err == nil {
		t.Fatalf("qemu-io wrote to a read-only export:\n%s", out)
	}
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, make([]byte, 4<<20), 0o644)
	if out, err := testutil.RunErr(t, "nbdcopy", src, uri); err == nil {
		t.Fatalf("nbdcopy into a read-only export succeeded:\n%s", out)
	}
	if err := testutil.QemuIOReadOnly(t, uri, "read -P 0x5a 0 1M"); err != nil {
		t.Fatal(err)
	}
}
