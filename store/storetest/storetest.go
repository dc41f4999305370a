package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Run checks the store.Store contract. open must return a new, empty store
// for each sub-test.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"WriteRead", testWriteRead},
		{"ShortRead", testShortRead},
		{"Holes", testHoles},
		{"Overwrite", testOverwrite},
		{"EmptyWrite", testEmptyWrite},
		{"NotFound", testNotFound},
		{"InvalidNames", testInvalidNames},
		{"OddNames", testOddNames},
		{"Offsets", testOffsets},
		{"Truncate", testTruncate},
		{"Delete", testDelete},
		{"Copy", testCopy},
		{"CopyAtomic", testCopyAtomic},
		{"List", testList},
		{"ListEarlyStop", testListEarlyStop},
		{"ListMutate", testListMutate},
		{"Sync", testSync},
		{"Concurrent", testConcurrent},
		{"Large", testLarge},
		{"Canceled", testCanceled},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, openStore(t, open))
		})
	}
}

// openStore opens a store and closes it when t ends.
func openStore[S store.Store](t *testing.T, open func(t *testing.T) S) S {
	t.Helper()
	s := open(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// pattern returns n pseudo-random bytes that depend only on seed.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func write(t *testing.T, s store.Store, name string, p []byte, off int64, fua bool) {
	t.Helper()
	if err := s.WriteAt(t.Context(), name, p, off, fua); err != nil {
		t.Fatalf("WriteAt(%q, %d bytes, %d, fua=%v): %v", name, len(p), off, fua, err)
	}
}

// read reads n bytes at off and returns the bytes that came from the object.
func read(t *testing.T, s store.Store, name string, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	got, err := s.ReadAt(t.Context(), name, p, off)
	if err != nil {
		t.Fatalf("ReadAt(%q, %d bytes, %d): %v", name, n, off, err)
	}
	if got < 0 || got > n {
		t.Fatalf("ReadAt(%q, %d bytes, %d) = %d, out of range", name, n, off, got)
	}
	return p[:got]
}

// readAll reads the whole object, checking Stat against what ReadAt returns.
func readAll(t *testing.T, s store.Store, name string) []byte {
	t.Helper()
	size := stat(t, s, name)
	data := read(t, s, name, 0, int(size)+1)
	if int64(len(data)) != size {
		t.Fatalf("object %q: Stat says %d bytes, ReadAt returned %d", name, size, len(data))
	}
	return data
}

func stat(t *testing.T, s store.Store, name string) int64 {
	t.Helper()
	size, err := s.Stat(t.Context(), name)
	if err != nil {
		t.Fatalf("Stat(%q): %v", name, err)
	}
	return size
}

func wantContent(t *testing.T, s store.Store, name string, want []byte) {
	t.Helper()
	got := readAll(t, s, name)
	if !bytes.Equal(got, want) {
		t.Fatalf("object %q: %s", name, diff(got, want))
	}
}

// diff describes where got and want differ.
func diff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %#02x, want %#02x", i, got[i], want[i])
		}
	}
	return "equal"
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func wantMissing(t *testing.T, s store.Store, name string) {
	t.Helper()
	_, err := s.Stat(t.Context(), name)
	wantErr(t, fmt.Sprintf("Stat(%q)", name), err, errs.ErrNotFound)
}

func list(t *testing.T, s store.Store, prefix string) []string {
	t.Helper()
	var names []string
	var mu sync.Mutex
	err := s.List(t.Context(), prefix, func(name string) error {
		mu.Lock()
		defer mu.Unlock()
		names = append(names, name)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	slices.Sort(names)
	return names
}

func testWriteRead(t *testing.T, s store.Store) {
	write(t, s, "obj", []byte("hello, world"), 0, false)
	wantContent(t, s, "obj", []byte("hello, world"))
	if got := read(t, s, "obj", 7, 5); string(got) != "world" {
		t.Errorf("ReadAt(7, 5) = %q, want %q", got, "world")
	}
	write(t, s, "fua", []byte("durable"), 0, true)
	wantContent(t, s, "fua", []byte("durable"))
	// Appends in pieces, alternating FUA.
	var want []byte
	for i := range 10 {
		p := pattern(uint64(i), 1000+i)
		write(t, s, "pieces", p, int64(len(want)), i%2 == 0)
		want = append(want, p...)
	}
	wantContent(t, s, "pieces", want)
}

func testShortRead(t *testing.T, s store.Store) {
	write(t, s, "obj", []byte("12345"), 0, false)
	p := bytes.Repeat([]byte{0xAA}, 10)
	n, err := s.ReadAt(t.Context(), "obj", p, 2)
	if err != nil || n != 3 {
		t.Fatalf("ReadAt(10 bytes at 2) of a 5-byte object = %d, %v; want 3, nil", n, err)
	}
	if string(p[:3]) != "345" || !bytes.Equal(p[3:], bytes.Repeat([]byte{0xAA}, 7)) {
		t.Errorf("buffer after short read = %q; want \"345\" and the tail untouched", p)
	}
	for _, off := range []int64{5, 6, 1 << 20, 1 << 40} {
		n, err := s.ReadAt(t.Context(), "obj", p, off)
		if err != nil || n != 0 {
			t.Errorf("ReadAt at %d past the end = %d, %v; want 0, nil", off, n, err)
		}
	}
	n, err = s.ReadAt(t.Context(), "obj", nil, 0)
	if err != nil || n != 0 {
		t.Errorf("ReadAt of no bytes = %d, %v; want 0, nil", n, err)
	}
}

func testHoles(t *testing.T, s store.Store) {
	const off = 1<<20 + 10
	write(t, s, "obj", []byte("tail"), off, false)
	if size := stat(t, s, "obj"); size != off+4 {
		t.Fatalf("size = %d, want %d", size, off+4)
	}
	want := append(make([]byte, off), "tail"...)
	wantContent(t, s, "obj", want)
	// A hole in the middle of written data.
	write(t, s, "mid", []byte("a"), 0, false)
	write(t, s, "mid", []byte("b"), 9000, true)
	want = make([]byte, 9001)
	want[0], want[9000] = 'a', 'b'
	wantContent(t, s, "mid", want)
}

func testOverwrite(t *testing.T, s store.Store) {
	want := pattern(1, 64<<10)
	write(t, s, "obj", want, 0, false)
	for i, w := range []struct {
		off int
		n   int
	}{{0, 1}, {100, 4096}, {4095, 2}, {60 << 10, 4 << 10}, {60 << 10, 8 << 10}, {1, 64 << 10}} {
		p := pattern(uint64(100+i), w.n)
		write(t, s, "obj", p, int64(w.off), i%2 == 1)
		if end := w.off + w.n; end > len(want) {
			want = append(want, make([]byte, end-len(want))...)
		}
		copy(want[w.off:], p)
		wantContent(t, s, "obj", want)
	}
}

func testEmptyWrite(t *testing.T, s store.Store) {
	write(t, s, "empty", nil, 0, false)
	if size := stat(t, s, "empty"); size != 0 {
		t.Errorf("size of an object made by an empty write = %d, want 0", size)
	}
	write(t, s, "empty-fua", []byte{}, 4096, true)
	if size := stat(t, s, "empty-fua"); size != 0 {
		t.Errorf("size after an empty write at 4096 = %d, want 0", size)
	}
	write(t, s, "obj", []byte("abc"), 0, false)
	write(t, s, "obj", nil, 100, false)
	wantContent(t, s, "obj", []byte("abc"))
	if got := read(t, s, "empty", 0, 10); len(got) != 0 {
		t.Errorf("read of an empty object returned %d bytes", len(got))
	}
	if got := list(t, s, "empty"); !slices.Equal(got, []string{"empty", "empty-fua"}) {
		t.Errorf("List = %q, want the empty objects", got)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	write(t, s, "other", []byte("x"), 0, false)
	_, err := s.ReadAt(ctx, "missing", make([]byte, 4), 0)
	wantErr(t, "ReadAt", err, errs.ErrNotFound)
	_, err = s.ReadAt(ctx, "missing", nil, 0)
	wantErr(t, "ReadAt of no bytes", err, errs.ErrNotFound)
	_, err = s.Stat(ctx, "missing")
	wantErr(t, "Stat", err, errs.ErrNotFound)
	wantErr(t, "Truncate", s.Truncate(ctx, "missing", 10), errs.ErrNotFound)
	wantErr(t, "Delete", s.Delete(ctx, "missing"), errs.ErrNotFound)
	wantErr(t, "Copy", s.Copy(ctx, "missing", "dst"), errs.ErrNotFound)
	wantErr(t, "Copy onto itself", s.Copy(ctx, "missing", "missing"), errs.ErrNotFound)
	wantErr(t, "Copy over an object", s.Copy(ctx, "missing", "other"), errs.ErrNotFound)
	// Nothing above may have created an object.
	wantMissing(t, s, "missing")
	wantMissing(t, s, "dst")
	wantContent(t, s, "other", []byte("x"))
	if got := list(t, s, ""); !slices.Equal(got, []string{"other"}) {
		t.Errorf("List = %q, want [other]", got)
	}
}

// badNames are names every store must refuse.
var badNames = []string{"", ".", "..", "a/b", "/abs", "dir/", "nul\x00byte", strings.Repeat("n", store.MaxNameLen+1)}

func testInvalidNames(t *testing.T, s store.Store) {
	ctx := t.Context()
	write(t, s, "good", []byte("x"), 0, false)
	for _, name := range badNames {
		what := func(op string) string { return fmt.Sprintf("%s(%.20q)", op, name) }
		_, err := s.ReadAt(ctx, name, make([]byte, 1), 0)
		wantErr(t, what("ReadAt"), err, errs.ErrInvalid)
		wantErr(t, what("WriteAt"), s.WriteAt(ctx, name, []byte("x"), 0, false), errs.ErrInvalid)
		wantErr(t, what("WriteAt FUA"), s.WriteAt(ctx, name, []byte("x"), 0, true), errs.ErrInvalid)
		_, err = s.Stat(ctx, name)
		wantErr(t, what("Stat"), err, errs.ErrInvalid)
		wantErr(t, what("Truncate"), s.Truncate(ctx, name, 0), errs.ErrInvalid)
		wantErr(t, what("Delete"), s.Delete(ctx, name), errs.ErrInvalid)
		wantErr(t, what("Copy from"), s.Copy(ctx, name, "good"), errs.ErrInvalid)
		wantErr(t, what("Copy to"), s.Copy(ctx, "good", name), errs.ErrInvalid)
	}
	if got := list(t, s, ""); !slices.Equal(got, []string{"good"}) {
		t.Errorf("List = %q, want [good]", got)
	}
	wantContent(t, s, "good", []byte("x"))
}

// testOddNames writes objects whose names a backend might use for its own
// files; each must be an ordinary object.
func testOddNames(t *testing.T, s store.Store) {
	names := []string{
		"...", ".hidden", "-", "tmp", "locks", "lock", "FORMAT", "00", "ff", "0",
		"with space", "tab\there", "new\nline", "ünïcode ✓", "%2F", "\\", "a.tmp",
		strings.Repeat("L", store.MaxNameLen),
	}
	for i, name := range names {
		write(t, s, name, []byte(fmt.Sprint(i)), 0, i%2 == 0)
	}
	want := slices.Sorted(slices.Values(names))
	if got := list(t, s, ""); !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	for i, name := range names {
		wantContent(t, s, name, []byte(fmt.Sprint(i)))
	}
	if err := s.Copy(t.Context(), "tmp", "locks"); err != nil {
		t.Fatalf("Copy(tmp, locks): %v", err)
	}
	wantContent(t, s, "locks", []byte(fmt.Sprint(slices.Index(names, "tmp"))))
	for _, name := range names {
		if err := s.Delete(t.Context(), name); err != nil {
			t.Errorf("Delete(%.20q): %v", name, err)
		}
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("List after deleting everything = %q", got)
	}
}

func testOffsets(t *testing.T, s store.Store) {
	ctx := t.Context()
	write(t, s, "obj", []byte("data"), 0, false)
	_, err := s.ReadAt(ctx, "obj", make([]byte, 1), -1)
	wantErr(t, "ReadAt at -1", err, errs.ErrInvalid)
	_, err = s.ReadAt(ctx, "obj", make([]byte, 10), math.MaxInt64-5)
	wantErr(t, "ReadAt overflowing int64", err, errs.ErrInvalid)
	wantErr(t, "WriteAt at -1", s.WriteAt(ctx, "obj", []byte("x"), -1, false), errs.ErrInvalid)
	wantErr(t, "WriteAt at MinInt64", s.WriteAt(ctx, "new", []byte("x"), math.MinInt64, true), errs.ErrInvalid)
	wantErr(t, "WriteAt overflowing int64", s.WriteAt(ctx, "obj", make([]byte, 10), math.MaxInt64-5, false), errs.ErrInvalid)
	wantErr(t, "Truncate to -1", s.Truncate(ctx, "obj", -1), errs.ErrInvalid)
	wantContent(t, s, "obj", []byte("data"))
	wantMissing(t, s, "new")

	// Unaligned offsets and lengths around 512 and 4096.
	want := make([]byte, 3*4096)
	for i, w := range [][2]int{{511, 2}, {4095, 4097}, {4096, 4096}, {1, 8190}, {8191, 4097}} {
		p := pattern(uint64(i), w[1])
		write(t, s, "align", p, int64(w[0]), false)
		copy(want[w[0]:], p)
	}
	wantContent(t, s, "align", want)
	for _, r := range [][2]int{{0, 4096}, {1, 4095}, {4095, 2}, {4096, 8192}, {12287, 1}, {12288, 1}} {
		got := read(t, s, "align", int64(r[0]), r[1])
		end := min(r[0]+r[1], len(want))
		if !bytes.Equal(got, want[r[0]:end]) {
			t.Errorf("ReadAt(%d, %d): %s", r[0], r[1], diff(got, want[r[0]:end]))
		}
	}
}

func testTruncate(t *testing.T, s store.Store) {
	ctx := t.Context()
	data := pattern(7, 10000)
	write(t, s, "obj", data, 0, false)
	truncate := func(size int64) {
		t.Helper()
		if err := s.Truncate(ctx, "obj", size); err != nil {
			t.Fatalf("Truncate(%d): %v", size, err)
		}
	}
	truncate(10000)
	wantContent(t, s, "obj", data)
	truncate(4000)
	wantContent(t, s, "obj", data[:4000])
	// Growing must not bring the cut bytes back.
	truncate(12000)
	want := append(slices.Clone(data[:4000]), make([]byte, 8000)...)
	wantContent(t, s, "obj", want)
	truncate(0)
	wantContent(t, s, "obj", nil)
	write(t, s, "obj", []byte("x"), 5000, true)
	want = make([]byte, 5001)
	want[5000] = 'x'
	wantContent(t, s, "obj", want)
	// Grow a new object from nothing.
	write(t, s, "grow", nil, 0, false)
	if err := s.Truncate(ctx, "grow", 1<<20); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s, "grow", make([]byte, 1<<20))
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	write(t, s, "obj", pattern(1, 8192), 0, true)
	write(t, s, "keep", []byte("keep"), 0, false)
	if err := s.Delete(ctx, "obj"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "obj")
	_, err := s.ReadAt(ctx, "obj", make([]byte, 1), 0)
	wantErr(t, "ReadAt after Delete", err, errs.ErrNotFound)
	wantErr(t, "second Delete", s.Delete(ctx, "obj"), errs.ErrNotFound)
	// A new object of the same name starts empty.
	write(t, s, "obj", []byte("new"), 10, false)
	wantContent(t, s, "obj", append(make([]byte, 10), "new"...))
	wantContent(t, s, "keep", []byte("keep"))
	if got := list(t, s, ""); !slices.Equal(got, []string{"keep", "obj"}) {
		t.Errorf("List = %q, want [keep obj]", got)
	}
}

func testCopy(t *testing.T, s store.Store) {
	ctx := t.Context()
	src := pattern(3, 100000)
	write(t, s, "src", src, 0, false)
	copyObj := func(from, to string) {
		t.Helper()
		if err := s.Copy(ctx, from, to); err != nil {
			t.Fatalf("Copy(%q, %q): %v", from, to, err)
		}
	}
	copyObj("src", "dst")
	wantContent(t, s, "dst", src)
	// The copy is independent of its source, both ways.
	write(t, s, "src", []byte("changed"), 0, false)
	write(t, s, "dst", []byte("other"), 50, false)
	wantContent(t, s, "dst", append(append(slices.Clone(src[:50]), "other"...), src[55:]...))
	wantContent(t, s, "src", append([]byte("changed"), src[7:]...))
	// Replacing a larger object leaves no trace of it.
	write(t, s, "big", pattern(4, 300000), 0, true)
	write(t, s, "small", []byte("small"), 0, false)
	copyObj("small", "big")
	wantContent(t, s, "big", []byte("small"))
	// An empty object copies as an empty object.
	write(t, s, "empty", nil, 0, false)
	copyObj("empty", "small")
	wantContent(t, s, "small", nil)
	// A copy onto itself changes nothing.
	copyObj("big", "big")
	wantContent(t, s, "big", []byte("small"))
	// A copy survives deleting its source.
	copyObj("src", "dst2")
	if err := s.Delete(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s, "dst2", append([]byte("changed"), src[7:]...))
	// A missing source leaves the destination alone.
	wantErr(t, "Copy from a missing object", s.Copy(ctx, "src", "dst2"), errs.ErrNotFound)
	wantContent(t, s, "dst2", append([]byte("changed"), src[7:]...))
	if got := list(t, s, ""); !slices.Equal(got, []string{"big", "dst", "dst2", "empty", "small"}) {
		t.Errorf("List = %q", got)
	}
}

// testCopyAtomic copies objects of uniform content over one another while
// readers check that they never see a mix.
func testCopyAtomic(t *testing.T, s store.Store) {
	ctx := t.Context()
	const size = 256 << 10
	write(t, s, "a", bytes.Repeat([]byte{'a'}, size), 0, false)
	write(t, s, "b", bytes.Repeat([]byte{'b'}, size/2), 0, false)
	write(t, s, "dst", bytes.Repeat([]byte{'a'}, size), 0, false)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			p := make([]byte, size)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := s.ReadAt(ctx, "dst", p, 0)
				if err != nil {
					t.Errorf("ReadAt during Copy: %v", err)
					return
				}
				if n != size && n != size/2 {
					t.Errorf("read %d bytes of dst, want %d or %d", n, size, size/2)
					return
				}
				if i := bytes.IndexFunc(p[:n], func(r rune) bool { return r != rune(p[0]) }); i >= 0 {
					t.Errorf("dst mixes %q and %q at byte %d", p[0], p[i], i)
					return
				}
			}
		})
	}
	for i := range 40 {
		if err := s.Copy(ctx, string(rune('a'+i%2)), "dst"); err != nil {
			t.Errorf("Copy: %v", err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

func testList(t *testing.T, s store.Store) {
	names := []string{"vol1_0001", "vol1_0002", "vol1", "vol10_0001", "vol2_0001", "map_vol1", "v"}
	for _, name := range names {
		write(t, s, name, []byte(name), 0, false)
	}
	for prefix, want := range map[string][]string{
		"":           slices.Sorted(slices.Values(names)),
		"vol1":       {"vol1", "vol10_0001", "vol1_0001", "vol1_0002"},
		"vol1_":      {"vol1_0001", "vol1_0002"},
		"vol1_0001":  {"vol1_0001"},
		"v":          {"v", "vol1", "vol10_0001", "vol1_0001", "vol1_0002", "vol2_0001"},
		"map_":       {"map_vol1"},
		"nothing":    nil,
		"vol1_00011": nil,
	} {
		if got := list(t, s, prefix); !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func testListEarlyStop(t *testing.T, s store.Store) {
	for i := range 20 {
		write(t, s, fmt.Sprintf("obj%02d", i), []byte("x"), 0, false)
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.List(t.Context(), "obj", func(name string) error {
		calls++
		if calls == 3 {
			return fmt.Errorf("at %q: %w", name, stop)
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v, want the error of fn", err)
	}
	if calls != 3 {
		t.Errorf("fn called %d times after it failed on call 3", calls)
	}
}

// testListMutate deletes and creates objects from inside List's callback.
func testListMutate(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i := range 50 {
		write(t, s, fmt.Sprintf("old%02d", i), []byte("x"), 0, false)
	}
	seen := 0
	err := s.List(ctx, "old", func(name string) error {
		seen++
		if err := s.Delete(ctx, name); err != nil {
			return err
		}
		return s.WriteAt(ctx, "new"+name[3:], []byte("y"), 0, false)
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if seen != 50 {
		t.Errorf("List saw %d of 50 objects that existed throughout", seen)
	}
	if got := list(t, s, "old"); len(got) != 0 {
		t.Errorf("List(old) after deleting all = %q", got)
	}
	if got := list(t, s, "new"); len(got) != 50 {
		t.Errorf("List(new) = %d names, want 50", len(got))
	}
}

func testSync(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync of an empty store: %v", err)
	}
	write(t, s, "a", []byte("a"), 0, false)
	write(t, s, "b", []byte("b"), 0, false)
	if err := s.Copy(ctx, "a", "c"); err != nil {
		t.Fatal(err)
	}
	if err := s.Truncate(ctx, "b", 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	wantContent(t, s, "c", []byte("a"))
	wantContent(t, s, "b", append([]byte("b"), make([]byte, 99)...))
	wantMissing(t, s, "a")
}

// testConcurrent runs many goroutines on one object (disjoint ranges) and on
// objects of their own, with syncs and lists in between; run it with -race.
func testConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const (
		workers = 16
		chunk   = 4096
		chunks  = 8
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Disjoint ranges of one shared object.
			for c := range chunks {
				off := int64((w*chunks + c) * chunk)
				p := pattern(uint64(w*chunks+c), chunk)
				if err := s.WriteAt(ctx, "shared", p, off, c%3 == 0); err != nil {
					t.Errorf("worker %d: WriteAt(shared, %d): %v", w, off, err)
					return
				}
				got := make([]byte, chunk)
				if n, err := s.ReadAt(ctx, "shared", got, off); err != nil || n != chunk || !bytes.Equal(got, p) {
					t.Errorf("worker %d: read back shared at %d: n=%d err=%v", w, off, n, err)
					return
				}
			}
			// An object of its own through its whole life.
			name := fmt.Sprintf("own%02d", w)
			data := pattern(uint64(1000+w), 3*chunk+w)
			if err := s.WriteAt(ctx, name, data, 0, w%2 == 0); err != nil {
				t.Errorf("worker %d: %v", w, err)
				return
			}
			if err := s.Copy(ctx, name, name+".copy"); err != nil {
				t.Errorf("worker %d: %v", w, err)
				return
			}
			if err := s.Truncate(ctx, name, chunk); err != nil {
				t.Errorf("worker %d: %v", w, err)
				return
			}
			got := make([]byte, len(data))
			if n, err := s.ReadAt(ctx, name+".copy", got, 0); err != nil || n != len(data) || !bytes.Equal(got, data) {
				t.Errorf("worker %d: copy: n=%d err=%v", w, n, err)
			}
			if n, err := s.ReadAt(ctx, name, got, 0); err != nil || n != chunk || !bytes.Equal(got[:n], data[:chunk]) {
				t.Errorf("worker %d: truncated: n=%d err=%v", w, n, err)
			}
			if err := s.Delete(ctx, name+".copy"); err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
			if w%4 == 0 {
				if err := s.Sync(ctx); err != nil {
					t.Errorf("worker %d: Sync: %v", w, err)
				}
			}
			if err := s.List(ctx, "own", func(string) error { return nil }); err != nil {
				t.Errorf("worker %d: List: %v", w, err)
			}
			if _, err := s.Stat(ctx, "shared"); err != nil {
				t.Errorf("worker %d: Stat: %v", w, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := make([]byte, 0, workers*chunks*chunk)
	for i := range workers * chunks {
		want = append(want, pattern(uint64(i), chunk)...)
	}
	wantContent(t, s, "shared", want)
	for w := range workers {
		name := fmt.Sprintf("own%02d", w)
		wantContent(t, s, name, pattern(uint64(1000+w), 3*chunk+w)[:chunk])
		wantMissing(t, s, name+".copy")
	}
}

func testLarge(t *testing.T, s store.Store) {
	const size = 4 << 20
	data := pattern(42, size)
	write(t, s, "large", data, 0, false)
	wantContent(t, s, "large", data)
	// Read it back in odd pieces.
	for off := 0; off < size; {
		n := min(123457, size-off)
		if got := read(t, s, "large", int64(off), n); !bytes.Equal(got, data[off:off+n]) {
			t.Fatalf("piece at %d: %s", off, diff(got, data[off:off+n]))
		}
		off += n
	}
	// A second 4 MiB write straddling the end, FUA.
	more := pattern(43, size)
	write(t, s, "large", more, size-1, true)
	wantContent(t, s, "large", append(slices.Clone(data[:size-1]), more...))
	if err := s.Copy(t.Context(), "large", "large.copy"); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s, "large.copy", append(slices.Clone(data[:size-1]), more...))
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func testCanceled(t *testing.T, s store.Store) {
	write(t, s, "obj", []byte("x"), 0, false)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.ReadAt(ctx, "obj", make([]byte, 1), 0)
	wantErr(t, "ReadAt", err, context.Canceled)
	wantErr(t, "WriteAt", s.WriteAt(ctx, "new", []byte("x"), 0, true), context.Canceled)
	_, err = s.Stat(ctx, "obj")
	wantErr(t, "Stat", err, context.Canceled)
	wantErr(t, "Truncate", s.Truncate(ctx, "obj", 0), context.Canceled)
	wantErr(t, "Delete", s.Delete(ctx, "obj"), context.Canceled)
	wantErr(t, "Copy", s.Copy(ctx, "obj", "new"), context.Canceled)
	wantErr(t, "Sync", s.Sync(ctx), context.Canceled)
	wantErr(t, "List", s.List(ctx, "", func(string) error { return nil }), context.Canceled)
	wantContent(t, s, "obj", []byte("x"))
	wantMissing(t, s, "new")
}

func testClosed(t *testing.T, s store.Store) {
	ctx := t.Context()
	write(t, s, "obj", []byte("x"), 0, false)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := s.ReadAt(ctx, "obj", make([]byte, 1), 0)
	wantErr(t, "ReadAt", err, errs.ErrShutdown)
	wantErr(t, "WriteAt", s.WriteAt(ctx, "obj", []byte("x"), 0, false), errs.ErrShutdown)
	_, err = s.Stat(ctx, "obj")
	wantErr(t, "Stat", err, errs.ErrShutdown)
	wantErr(t, "Truncate", s.Truncate(ctx, "obj", 0), errs.ErrShutdown)
	wantErr(t, "Delete", s.Delete(ctx, "obj"), errs.ErrShutdown)
	wantErr(t, "Copy", s.Copy(ctx, "obj", "new"), errs.ErrShutdown)
	wantErr(t, "Sync", s.Sync(ctx), errs.ErrShutdown)
	wantErr(t, "List", s.List(ctx, "", func(string) error { return nil }), errs.ErrShutdown)
	if l, ok := s.(store.Locker); ok {
		wantErr(t, "TryLock", l.TryLock(ctx, "l", "o"), errs.ErrShutdown)
		wantErr(t, "Unlock", l.Unlock(ctx, "l", "o", true), errs.ErrShutdown)
		_, err = l.LockOwner(ctx, "l")
		wantErr(t, "LockOwner", err, errs.ErrShutdown)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
