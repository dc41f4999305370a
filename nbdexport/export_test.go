package nbdexport_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
)

// Tests with real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy from
// Debian's qemu-utils and libnbd-bin) against nbdd on the whole stack.

// qemuIO runs qemu-io's commands on the raw image at uri; t fails if one
// fails.
func qemuIO(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	if err := testutil.QemuIO(t, uri, cmds...); err != nil {
		t.Fatal(err)
	}
}

// qemuIOArgs is qemuIO with qemu-io's arguments given in full.
func qemuIOArgs(t *testing.T, args []string, cmds ...string) {
	t.Helper()
	if err := testutil.QemuIOArgs(t, args, cmds...); err != nil {
		t.Fatal(err)
	}
}

func TestQemuIOPatterns(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	s := stacktest.Start(t, stacktest.Options{NBD: true})
	s.Create(t, "qemuvol", 64<<20)
	uri := s.URI("qemuvol")
	qemuIO(t, uri,
		"write -P 0x11 0 64k",
		"write -P 0x22 4190208 8k", // across the 4 MiB block boundary
		"write -P 0x33 12345 777",  // unaligned
		"aio_write -P 0x44 20M 1M", "aio_write -P 0x45 21M 1M", "aio_write -P 0x46 30M 4M", "aio_flush",
		"write -P 0x55 -f 40M 64k", // FUA
		"flush")
	qemuIO(t, uri,
		"read -P 0x11 0 12345", "read -P 0x33 12345 777", "read -P 0x11 13122 52414",
		"read -P 0x22 4190208 8k",
		"read -P 0x44 20M 1M", "read -P 0x45 21M 1M", "read -P 0x46 30M 4M",
		"read -P 0x55 40M 64k",
		"read -P 0 50M 1M")
	// Discard whole blocks: they read as zeros; write -z likewise.
	qemuIO(t, uri, "discard 28M 8M", "read -P 0 28M 8M", "write -z 20M 64k", "read -P 0 20M 64k", "read -P 0x44 21037056 64k")
}

func TestMapShowsHoles(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdinfo")
	s := stacktest.Start(t, stacktest.Options{NBD: true})
	s.Create(t, "sparsevol", 64<<20)
	qemuIO(t, s.URI("sparsevol"), "write -P 1 8M 4k", "write -P 2 40M 4k")
	out := testutil.Run(t, "nbdinfo", "--map", s.URI("sparsevol"))
	// 4 MiB blocks: data at [8M,12M) and [40M,44M), holes elsewhere.
	want := []string{
		"0     8388608    3  hole,zero",
		"8388608     4194304    0  data",
		"12582912    29360128    3  hole,zero",
		"41943040     4194304    0  data",
		"46137344    20971520    3  hole,zero",
	}
	fields := strings.Fields(out)
	got := strings.Join(fields, " ")
	for _, w := range want {
		if !strings.Contains(got, strings.Join(strings.Fields(w), " ")) {
			t.Errorf("nbdinfo --map lacks %q:\n%s", w, out)
		}
	}
}

func writeRandomFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(buf)) {
		r.Read(buf)
		if n/(1<<20)%7 == 3 { // some holes, so that sparseness shows too
			clear(buf)
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
}

func sum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestNbdcopyRoundTrip(t *testing.T) {
	testutil.NeedBinaries(t, "nbdcopy", "qemu-img")
	size := int64(1 << 30)
	if testing.Short() {
		size = 128 << 20
	}
	s := stacktest.Start(t, stacktest.Options{NBD: true})
	s.Create(t, "bigvol", uint64(size))
	dir := t.TempDir()
	in, out, out2 := filepath.Join(dir, "in.img"), filepath.Join(dir, "out.img"), filepath.Join(dir, "out2.img")
	writeRandomFile(t, in, size, 7)
	testutil.Run(t, "nbdcopy", "--connections=4", "--threads=4", in, s.URI("bigvol"))
	testutil.Run(t, "nbdcopy", "--connections=4", "--threads=4", s.URI("bigvol"), out)
	if a, b := sum(t, in), sum(t, out); a != b {
		t.Fatalf("nbdcopy in and out: sha256 %s != %s", a, b)
	}
	testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.URI("bigvol"), out2)
	if a, b := sum(t, in), sum(t, out2); a != b {
		t.Fatalf("qemu-img convert out: sha256 %s != %s", a, b)
	}
}

// A snapshot taken while a writer runs holds exactly the writes answered
// before it (the writer writes chunks in order, so the snapshot is the new
// pattern up to some chunk and the old one after); a clone of it starts
// from that, and writes to the clone leak nowhere. The snapshot is taken
// once the writer's first chunk is seen; if it still missed the writes
// (the writer was done before it), the test tries again with a new volume.
func TestSnapshotUnderWritesAndClone(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io")
	s := stacktest.Start(t, stacktest.Options{NBD: true})
	const size, chunk = 32 << 20, 256 << 10
	const attempts = 5
	var vol, uri string
	var snap []byte
	k := 0
	for try := 1; ; try++ {
		vol = fmt.Sprintf("busyvol%d", try)
		uri = s.URI(vol)
		s.Create(t, vol, size)
		qemuIO(t, uri, fmt.Sprintf("write -P 0xaa 0 %d", size))
		args := []string{"-f", "raw", uri}
		for off := 0; off < size; off += chunk {
			args = append(args, "-c", fmt.Sprintf("write -P 0xbb %d 256k", off))
		}
		writer := exec.Command("qemu-io", args...)
		if err := writer.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for the first chunk, so that the snapshot cannot come
		// before the writes.
		for {
			b, err := s.TryRead(vol, 0, 1)
			if err != nil {
				writer.Process.Kill()
				writer.Wait()
				t.Fatalf("poll %s for the writer's first chunk: %v", vol, err)
			}
			if b[0] == 0xbb {
				break
			}
			time.Sleep(time.Millisecond)
		}
		snapErr := s.TrySnapshot(vol, vol+"-snap")
		if err := writer.Wait(); err != nil {
			t.Fatalf("writer: %v", err)
		}
		if snapErr != nil {
			t.Fatalf("snapshot of %s during the writes: %v", vol, snapErr)
		}
		snap = s.Read(t, vol+"-snap", 0, size)
		k = bytes.IndexByte(snap, 0xaa)
		if k < 0 {
			k = size
		}
		if k%chunk != 0 || bytes.Count(snap[:k], []byte{0xbb}) != k || bytes.Count(snap[k:], []byte{0xaa}) != size-k {
			t.Fatalf("snapshot of %s is not a prefix of whole writes: new pattern up to %d", vol, k)
		}
		t.Logf("try %d: snapshot caught %d of %d chunks", try, k/chunk, size/chunk)
		if k > 0 && k < size {
			break // it fell during the writes
		}
		if try == attempts {
			t.Fatalf("in %d tries the snapshot never fell during the writes (last: %d of %d chunks)", attempts, k/chunk, size/chunk)
		}
	}
	qemuIO(t, uri, fmt.Sprintf("read -P 0xbb 0 %d", size))
	s.Clone(t, vol+"-snap", "busyclone", 0)
	qemuIO(t, s.URI("busyclone"), "write -P 0xcc 1M 1M", "read -P 0xcc 1M 1M")
	if got := s.Read(t, vol+"-snap", 0, size); !bytes.Equal(got, snap) {
		t.Fatal("the snapshot changed after writes to its clone")
	}
	qemuIO(t, uri, "read -P 0xbb 1M 1M")
}

func TestSnapshotExportIsReadOnly(t *testing.T) {
	testutil.NeedBinaries(t, "qemu-io", "nbdinfo")
	s := stacktest.Start(t, stacktest.Options{NBD: true})
	s.Create(t, "rovolume", 8<<20)
	qemuIO(t, s.URI("rovolume"), "write -P 7 0 1M")
	s.Snapshot(t, "rovolume", "rovolume-snap")
	if out := testutil.Run(t, "nbdinfo", s.URI("rovolume-snap")); !strings.Contains(out, "is_read_only: true") {
		t.Errorf("snapshot export not read-only:\n%s", out)
	}
	ro := []string{"-r", "-f", "raw", s.URI("rovolume-snap")}
	qemuIOArgs(t, ro, "read -P 7 0 1M")
	out, err := exec.Command("qemu-io", "-f", "raw", s.URI("rovolume-snap"), "-c", "write -P 8 0 4k").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "failed") && !strings.Contains(string(out), "read-only") && !strings.Contains(string(out), "Operation not permitted") {
		t.Fatalf("write to a snapshot export went through:\n%s", out)
	}
	qemuIOArgs(t, ro, "read -P 7 0 1M")
}

func TestUnknownExport(t *testing.T) {
	testutil.NeedBinaries(t, "nbdinfo")
	s := stacktest.Start(t, stacktest.Options{NBD: true})
	out, err := exec.Command("nbdinfo", s.URI("no-such-volume")).CombinedOutput()
	if err == nil {
		t.Fatalf("nbdinfo of a missing volume succeeded:\n%s", out)
	}
	s.Create(t, "listed1", 1<<20)
	s.Create(t, "listed2", 1<<20)
	if out := testutil.Run(t, "nbdinfo", "--list", s.URI("")); !strings.Contains(out, `"listed1"`) || !strings.Contains(out, `"listed2"`) {
		t.Errorf("nbdinfo --list:\n%s", out)
	}
}
