package blocker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// These tests run filed as a real process, the way `archipelago start`
// runs it, and talk to it through the segment from a peer.Client on a
// dynamic port. filed always binds port 1.

const (
	filedPort = 1
	kib       = 1 << 10
	mib       = 1 << 20
)

// newSegment creates a segment named after the test (see testbin.Segment).
func newSegment(t testing.TB, prefix string, sizeMiB int) *xseg.Segment {
	t.Helper()
	return testbin.Segment(t, prefix, sizeMiB)
}

// filed is a filed process serving port 1 of a test segment, and a client
// to talk to it.
type filed struct {
	t    testing.TB
	seg  *xseg.Segment
	c    *peer.Client
	dir  string   // --archip-dir
	args []string // the command line, to restart it alike
	proc *testbin.Proc
}

// startFiled starts filed over a new segment and a new archip_dir under
// root ("" for the test's temporary directory), with extra flags.
func startFiled(t testing.TB, root string, extra ...string) *filed {
	t.Helper()
	s := newSegment(t, "blockertest", 64)
	if root == "" {
		root = t.TempDir()
	}
	dir := filepath.Join(root, "data")
	args := append([]string{"--segment", s.Name(), "--portno-start", "1", "--archip-dir", dir, "--log-level", "1"}, extra...)
	f := &filed{t: t, seg: s, dir: dir, args: args}
	f.start()
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.c = c
	return f
}

// start runs filed and waits until it has bound its port.
func (f *filed) start() {
	f.t.Helper()
	f.proc = testbin.Start(f.t, "filed", f.args...)
	testutil.WaitFor(f.t, 10*time.Second, "filed to bind port 1", func() bool {
		if f.proc.Exited() {
			f.t.Fatalf("filed exited: %v\n%s", f.proc.Wait(0), f.proc.Output())
		}
		pid, alive := f.seg.Owner(filedPort)
		return alive && pid == f.proc.Cmd.Process.Pid
	})
}

// crash kills filed with SIGKILL and starts it again over the same
// directories.
func (f *filed) crash() {
	f.t.Helper()
	f.proc.Kill()
	f.start()
}

// req is one request to filed.
type req struct {
	op     xseg.Op
	target string
	off    uint64
	size   uint64 // bytes to read or write; for WRITE default len(data)
	flags  xseg.Flags
	data   []byte       // copied to the buffer (WRITE)
	p      wire.Payload // encoded into the buffer; Size is its length
}

// reply is a copy of filed's answer, taken before the request went back
// to the pool.
type reply struct {
	err      error
	size     uint64
	serviced uint64
	data     []byte // the first size bytes of the buffer
}

// send makes one request. Its buffer is at least 4 KiB (room for any
// reply payload) and is filled with garbage before the request goes, so
// that a READ that does not fill it shows. The error is the transport's;
// filed's answer is in reply.err.
func (f *filed) send(ctx context.Context, q req) (reply, error) {
	var enc []byte
	if q.p != nil {
		if enc = q.p.Marshal(); enc == nil {
			_, err := q.p.MarshalTo(nil)
			return reply{}, err
		}
	}
	size := q.size
	if q.op == xseg.OpWrite && size == 0 {
		size = uint64(len(q.data))
	}
	if enc != nil {
		size = uint64(len(enc))
	}
	r, err := f.c.Alloc(max(4*kib, len(q.data), int(size)))
	if err != nil {
		return reply{}, err
	}
	r.SetOp(q.op)
	r.SetFlags(q.flags)
	r.SetOffset(q.off)
	if err := r.SetTarget(q.target); err != nil {
		f.c.Put(r)
		return reply{}, err
	}
	buf := r.Buffer()
	for i := range buf {
		buf[i] = 0xA5
	}
	copy(buf, q.data)
	copy(buf, enc)
	r.SetSize(size)
	rep, err := f.c.Call(ctx, r, filedPort)
	if err != nil {
		return reply{}, err
	}
	defer f.c.Put(rep)
	return reply{err: rep.Err(), size: rep.Size(), serviced: rep.Serviced(), data: bytes.Clone(rep.Data())}, nil
}

// do makes one request and fails the test if it cannot be made.
func (f *filed) do(q req) reply {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := f.send(ctx, q)
	if err != nil {
		f.t.Fatalf("%v %q: %v", q.op, q.target, err)
	}
	return rep
}

// ok makes a request that must succeed.
func (f *filed) ok(q req) reply {
	f.t.Helper()
	rep := f.do(q)
	if rep.err != nil {
		f.t.Fatalf("%v %q off %d size %d flags %v: %v", q.op, q.target, q.off, q.size, q.flags, rep.err)
	}
	return rep
}

// fails makes a request that must fail with want.
func (f *filed) fails(q req, want error) reply {
	f.t.Helper()
	rep := f.do(q)
	if !errors.Is(rep.err, want) {
		f.t.Fatalf("%v %q: got %v, want %v", q.op, q.target, rep.err, want)
	}
	return rep
}

func (f *filed) write(name string, off uint64, data []byte) {
	f.t.Helper()
	rep := f.ok(req{op: xseg.OpWrite, target: name, off: off, data: data})
	if rep.serviced != uint64(len(data)) {
		f.t.Fatalf("WRITE %q: serviced %d of %d", name, rep.serviced, len(data))
	}
}

// read reads n bytes, which must all be answered (zeros past the end), and
// returns them and Serviced: how many came from the object.
func (f *filed) read(name string, off, n uint64) ([]byte, uint64) {
	f.t.Helper()
	rep := f.ok(req{op: xseg.OpRead, target: name, off: off, size: n})
	if uint64(len(rep.data)) != n || rep.serviced > n {
		f.t.Fatalf("READ %q at %d: %d bytes, serviced %d, want %d", name, off, len(rep.data), rep.serviced, n)
	}
	return rep.data, rep.serviced
}

// info returns the object's size.
func (f *filed) info(name string) uint64 {
	f.t.Helper()
	rep := f.ok(req{op: xseg.OpInfo, target: name})
	var oi wire.ObjectInfo
	if err := oi.Unmarshal(rep.data); err != nil {
		f.t.Fatalf("INFO %q answered %x: %v", name, rep.data, err)
	}
	return oi.Size
}

func (f *filed) lock(op xseg.Op, name, owner string, flags xseg.Flags) reply {
	f.t.Helper()
	return f.do(req{op: op, target: name, flags: flags, p: &wire.Lock{Owner: owner}})
}

// holder decodes the LockReply of a failed ACQUIRE.
func holder(t testing.TB, rep reply) string {
	t.Helper()
	var lr wire.LockReply
	if err := lr.Unmarshal(rep.data); err != nil {
		t.Fatalf("ACQUIRE failed with %v and a reply of %d bytes that is no LockReply: %v", rep.err, len(rep.data), err)
	}
	return lr.Owner
}

func random(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// model is the expected content of one object.
type model []byte

func (m *model) write(off int, p []byte) {
	if end := off + len(p); end > len(*m) {
		*m = append(*m, make([]byte, end-len(*m))...)
	}
	copy((*m)[off:], p)
}

// at returns n bytes at off, zeros past the end.
func (m model) at(off, n int) []byte {
	b := make([]byte, n)
	if off < len(m) {
		copy(b, m[off:])
	}
	return b
}

// check reads n bytes at off of object name and compares them, and
// Serviced (the bytes that came from the object), with the model.
func (m model) check(t testing.TB, f *filed, name string, off, n int) {
	t.Helper()
	got, serviced := f.read(name, uint64(off), uint64(n))
	if !bytes.Equal(got, m.at(off, n)) {
		t.Errorf("READ of %d bytes at %d differs from what was written", n, off)
	}
	if want := uint64(min(max(len(m)-off, 0), n)); serviced != want {
		t.Errorf("READ of %d bytes at %d of a %d-byte object: serviced %d, want %d", n, off, len(m), serviced, want)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	f := startFiled(t, "")
	const name = "roundtrip"
	var m model
	writes := []struct{ off, n int }{
		{0, 4 * kib},
		{4 * kib, 4 * kib},
		{1, 1},
		{4*kib - 1, 2},
		{12345, 777},
		{0, 4 * mib},
		{mib + 3, 64*kib + 5},
		{4*mib - 100, 200},
		{8 * mib, 4 * kib}, // leaves a hole of zeros
		{6 * mib, 4 * mib},
	}
	for i, w := range writes {
		data := random(uint64(i), w.n)
		f.write(name, uint64(w.off), data)
		m.write(w.off, data)
		// Read back what was just written, and a little around it.
		lo := max(w.off-10, 0)
		m.check(t, f, name, lo, w.n+20)
	}
	if got := f.info(name); got != uint64(len(m)) {
		t.Fatalf("INFO size %d, want %d", got, len(m))
	}
	reads := []struct{ off, n int }{
		{0, 1}, {0, 4 * kib}, {1, 4 * kib}, {4*kib - 1, 3}, {0, 4 * mib}, {4 * mib, 4 * mib},
		{4*mib - 7, 4 * mib}, {8*mib - 1, 4*kib + 2}, {len(m) - 4*kib, 4 * kib}, {len(m) - 100, 4 * mib},
	}
	for _, r := range reads {
		m.check(t, f, name, r.off, r.n)
	}
}

// TestSmallFDCache: with --fdcache 2, filed keeps at most 2 of the 10
// objects it wrote open (it closed the others: they were evicted), and
// reads each back all the same (opening it again).
func TestSmallFDCache(t *testing.T) {
	f := startFiled(t, "", "--fdcache", "2")
	for round := range 2 {
		for i := range 10 {
			name := fmt.Sprintf("obj-%d", i)
			if round == 0 {
				f.write(name, uint64(i*100), random(uint64(i), 4*kib))
			} else {
				var m model
				m.write(i*100, random(uint64(i), 4*kib))
				m.check(t, f, name, i*100, 4*kib)
			}
		}
		// The objects filed holds open are those of its cache: the last
		// ones used, no more than 2.
		if open := f.openObjects(); len(open) == 0 || len(open) > 2 {
			t.Fatalf("round %d: filed holds %d objects open with --fdcache 2: %q", round, len(open), open)
		}
	}
}

// openObjects returns the object files under f.dir that the filed process
// holds open (from /proc/<pid>/fd).
func (f *filed) openObjects() []string {
	f.t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", f.proc.Cmd.Process.Pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		f.t.Fatalf("list filed's descriptors: %v", err)
	}
	var open []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil || !strings.HasPrefix(target, f.dir+"/") {
			continue // closed meanwhile, or not under the store
		}
		if st, err := os.Stat(target); err == nil && st.Mode().IsRegular() {
			open = append(open, strings.TrimPrefix(target, f.dir+"/"))
		}
	}
	return open
}

// TestReadPastEnd: what lies past the end reads as zeros (the buffer held
// garbage before) and Serviced counts only the bytes of the object.
func TestReadPastEnd(t *testing.T) {
	f := startFiled(t, "")
	var m model
	m.write(0, random(1, 1000))
	f.write("short", 0, m)
	m.check(t, f, "short", 0, 4*kib)
	m.check(t, f, "short", 500, 2*mib)
	m.check(t, f, "short", 999, 2)
	m.check(t, f, "short", 1000, 4*kib)
	m.check(t, f, "short", 1<<30, 4*kib)
	if n := f.info("short"); n != 1000 {
		t.Errorf("a read past the end changed the size to %d", n)
	}
}

// TestReadMissingObject: a READ of an object that does not exist fails
// with ErrNotFound (the volume layer reads it as zeros) and creates
// nothing.
func TestReadMissingObject(t *testing.T) {
	f := startFiled(t, "")
	for _, n := range []uint64{1, 4 * kib, 4 * mib} {
		f.fails(req{op: xseg.OpRead, target: "nobody", off: 12288, size: n}, errs.ErrNotFound)
	}
	f.fails(req{op: xseg.OpInfo, target: "nobody"}, errs.ErrNotFound)
}

func TestTruncate(t *testing.T) {
	f := startFiled(t, "")
	m := model(random(2, 8*kib))
	f.write("t", 0, m)
	f.ok(req{op: xseg.OpTruncate, target: "t", off: 100})
	m = m[:100]
	if n := f.info("t"); n != 100 {
		t.Fatalf("size %d after truncate to 100", n)
	}
	m.check(t, f, "t", 0, 8*kib)
	f.ok(req{op: xseg.OpTruncate, target: "t", off: 3 * mib})
	m.write(3*mib-1, []byte{0})
	if n := f.info("t"); n != 3*mib {
		t.Fatalf("size %d after growing to 3 MiB", n)
	}
	m.check(t, f, "t", 0, 3*mib) // the old tail does not come back
	f.ok(req{op: xseg.OpTruncate, target: "t", off: 0})
	if n := f.info("t"); n != 0 {
		t.Errorf("size %d after truncate to 0", n)
	}
	model(nil).check(t, f, "t", 0, 4*kib)
	f.fails(req{op: xseg.OpTruncate, target: "missing", off: 10}, errs.ErrNotFound)
	f.fails(req{op: xseg.OpInfo, target: "missing"}, errs.ErrNotFound)
}

func TestDelete(t *testing.T) {
	f := startFiled(t, "")
	f.write("d", 0, random(3, 4*kib))
	f.ok(req{op: xseg.OpDelete, target: "d"})
	f.fails(req{op: xseg.OpInfo, target: "d"}, errs.ErrNotFound)
	f.fails(req{op: xseg.OpRead, target: "d", size: 4 * kib}, errs.ErrNotFound)
	f.fails(req{op: xseg.OpDelete, target: "d"}, errs.ErrNotFound)
	f.fails(req{op: xseg.OpDelete, target: "never"}, errs.ErrNotFound)
	// The name can be used again, from scratch.
	f.write("d", 10, []byte("x"))
	model(append(make([]byte, 10), 'x')).check(t, f, "d", 0, 4*kib)
}

func TestCopy(t *testing.T) {
	f := startFiled(t, "")
	src := random(4, 3*mib+17)
	f.write("src", 0, src)
	f.ok(req{op: xseg.OpCopy, target: "dst", p: &wire.Copy{Source: "src"}})
	if n := f.info("dst"); n != uint64(len(src)) {
		t.Fatalf("copy has size %d, want %d", n, len(src))
	}
	model(src).check(t, f, "dst", 0, 4*mib)
	// The copy is independent of its source.
	f.write("src", 0, []byte("changed"))
	if got, _ := f.read("dst", 0, 7); !bytes.Equal(got, src[:7]) {
		t.Error("a write to the source shows in the copy")
	}
	// A copy replaces an existing target whole.
	f.write("small", 0, []byte("tiny"))
	f.write("big", 0, random(5, 8*kib))
	f.ok(req{op: xseg.OpCopy, target: "big", p: &wire.Copy{Source: "small"}})
	if n := f.info("big"); n != 4 {
		t.Errorf("copy onto a larger object left size %d", n)
	}
	f.fails(req{op: xseg.OpCopy, target: "dst2", p: &wire.Copy{Source: "missing"}}, errs.ErrNotFound)
	f.fails(req{op: xseg.OpInfo, target: "dst2"}, errs.ErrNotFound)
	// No payload: a malformed request.
	f.fails(req{op: xseg.OpCopy, target: "dst3"}, errs.ErrInvalid)
}

func TestInfo(t *testing.T) {
	f := startFiled(t, "")
	f.write("i", 5*kib, []byte{1})
	rep := f.ok(req{op: xseg.OpInfo, target: "i"})
	p, err := wire.Decode(rep.data)
	if err != nil {
		t.Fatal(err)
	}
	if oi, ok := p.(*wire.ObjectInfo); !ok || oi.Size != 5*kib+1 {
		t.Errorf("INFO answered %#v, want ObjectInfo{Size: %d}", p, 5*kib+1)
	}
	if rep.serviced != rep.size {
		t.Errorf("INFO serviced %d of a %d-byte reply", rep.serviced, rep.size)
	}
	f.fails(req{op: xseg.OpInfo, target: "none"}, errs.ErrNotFound)
}

func TestLocks(t *testing.T) {
	f := startFiled(t, "", "--ident", "filed-ident")
	const vol = "volume-lock"
	if rep := f.lock(xseg.OpAcquire, vol, "A", xseg.FlagNoSync); rep.err != nil {
		t.Fatalf("first ACQUIRE: %v", rep.err)
	}
	// Re-entrant for the same owner, with and without NOSYNC.
	if rep := f.lock(xseg.OpAcquire, vol, "A", xseg.FlagNoSync); rep.err != nil {
		t.Fatalf("re-entrant ACQUIRE with NOSYNC: %v", rep.err)
	}
	if rep := f.lock(xseg.OpAcquire, vol, "A", 0); rep.err != nil {
		t.Fatalf("re-entrant ACQUIRE: %v", rep.err)
	}
	// NOSYNC on a held lock fails at once and names the holder.
	rep := f.lock(xseg.OpAcquire, vol, "B", xseg.FlagNoSync)
	if !errors.Is(rep.err, errs.ErrLocked) {
		t.Fatalf("ACQUIRE NOSYNC of a held lock: %v, want ErrLocked", rep.err)
	}
	if h := holder(t, rep); h != "A" {
		t.Errorf("LockReply names %q, want A", h)
	}
	// Release by another owner is refused, and the lock stays.
	if rep := f.lock(xseg.OpRelease, vol, "B", 0); !errors.Is(rep.err, errs.ErrNotOwner) {
		t.Fatalf("RELEASE by another owner: %v, want ErrNotOwner", rep.err)
	}
	if h := holder(t, f.lock(xseg.OpAcquire, vol, "C", xseg.FlagNoSync)); h != "A" {
		t.Fatalf("after a refused RELEASE the lock is held by %q", h)
	}
	// A lock is no object.
	f.fails(req{op: xseg.OpInfo, target: vol}, errs.ErrNotFound)

	// ACQUIRE without NOSYNC waits until the holder releases.
	waiting := make(chan reply, 1)
	go func() {
		rep, err := f.send(context.Background(), req{op: xseg.OpAcquire, target: vol, p: &wire.Lock{Owner: "B"}})
		if err != nil {
			rep.err = fmt.Errorf("transport: %w", err)
		}
		waiting <- rep
	}()
	select {
	case rep := <-waiting:
		t.Fatalf("ACQUIRE of a held lock answered %v without waiting", rep.err)
	case <-time.After(300 * time.Millisecond):
	}
	if rep := f.lock(xseg.OpRelease, vol, "A", 0); rep.err != nil {
		t.Fatalf("RELEASE by the holder: %v", rep.err)
	}
	select {
	case rep := <-waiting:
		if rep.err != nil {
			t.Fatalf("waiting ACQUIRE: %v", rep.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("waiting ACQUIRE not answered after the lock was released")
	}
	if h := holder(t, f.lock(xseg.OpAcquire, vol, "A", xseg.FlagNoSync)); h != "B" {
		t.Fatalf("after the wait the lock is held by %q, want B", h)
	}
	// FORCE breaks another owner's lock.
	if rep := f.lock(xseg.OpRelease, vol, "A", xseg.FlagForce); rep.err != nil {
		t.Fatalf("RELEASE FORCE: %v", rep.err)
	}
	if rep := f.lock(xseg.OpAcquire, vol, "A", xseg.FlagNoSync); rep.err != nil {
		t.Fatalf("ACQUIRE after a forced release: %v", rep.err)
	}
	f.ok(req{op: xseg.OpRelease, target: vol, p: &wire.Lock{Owner: "A"}})
	if rep := f.lock(xseg.OpRelease, vol, "A", 0); !errors.Is(rep.err, errs.ErrNotFound) {
		t.Errorf("RELEASE of a free lock: %v, want ErrNotFound", rep.err)
	}

	// Without a payload the owner is filed's --ident.
	f.ok(req{op: xseg.OpAcquire, target: "anon", flags: xseg.FlagNoSync})
	if h := holder(t, f.lock(xseg.OpAcquire, "anon", "A", xseg.FlagNoSync)); h != "filed-ident" {
		t.Errorf("a lock taken without owner is held by %q, want filed-ident", h)
	}
	f.ok(req{op: xseg.OpRelease, target: "anon"})
}

func TestLockOwner(t *testing.T) {
	f := startFiled(t, "")
	f.fails(req{op: xseg.OpLockOwner, target: "vol"}, errs.ErrNotFound)
	if rep := f.lock(xseg.OpAcquire, "vol", "owner-1", xseg.FlagNoSync); rep.err != nil {
		t.Fatal(rep.err)
	}
	if h := holder(t, f.ok(req{op: xseg.OpLockOwner, target: "vol"})); h != "owner-1" {
		t.Errorf("LOCKOWNER names %q, want owner-1", h)
	}
	f.ok(req{op: xseg.OpRelease, target: "vol", p: &wire.Lock{Owner: "owner-1"}})
	f.fails(req{op: xseg.OpLockOwner, target: "vol"}, errs.ErrNotFound)
}

func TestList(t *testing.T) {
	f := startFiled(t, "")
	var want []string
	for i := range 300 { // more than one 4 KiB answer holds
		name := fmt.Sprintf("listed-object-%04d", (i*7919)%300)
		f.write(name, 0, []byte{1})
		want = append(want, name)
	}
	slices.Sort(want)
	f.write("other", 0, []byte{1})
	if rep := f.lock(xseg.OpAcquire, "listed-lock", "o", xseg.FlagNoSync); rep.err != nil {
		t.Fatal(rep.err)
	}
	list := func(prefix string) (names []string, pages int) {
		t.Helper()
		after := ""
		for {
			rep := f.ok(req{op: xseg.OpList, p: &wire.List{Prefix: prefix, After: after}})
			var page wire.Names
			if err := page.Unmarshal(rep.data); err != nil {
				t.Fatal(err)
			}
			names = append(names, page.Names...)
			pages++
			if !page.More {
				return names, pages
			}
			if len(page.Names) == 0 {
				t.Fatal("LIST answered an empty page with More")
			}
			after = page.Names[len(page.Names)-1]
		}
	}
	got, pages := list("listed")
	if !slices.Equal(got, want) {
		t.Errorf("LIST listed: %d names %q..., want %d", len(got), got[:min(len(got), 3)], len(want))
	}
	if pages < 2 {
		t.Errorf("%d names came in %d page of 4 KiB", len(got), pages)
	}
	if got, _ := list(""); len(got) != len(want)+1 {
		t.Errorf("LIST of everything: %d names, want %d (locks are no objects)", len(got), len(want)+1)
	}
	if got, _ := list("none"); len(got) != 0 {
		t.Errorf("LIST none: %q", got)
	}
}

func TestLocksSurviveCrash(t *testing.T) {
	f := startFiled(t, "")
	if rep := f.lock(xseg.OpAcquire, "vol", "A", xseg.FlagNoSync); rep.err != nil {
		t.Fatal(rep.err)
	}
	f.crash()
	rep := f.lock(xseg.OpAcquire, "vol", "B", xseg.FlagNoSync)
	if !errors.Is(rep.err, errs.ErrLocked) {
		t.Fatalf("after a SIGKILL of filed, ACQUIRE by another owner: %v, want ErrLocked", rep.err)
	}
	if h := holder(t, rep); h != "A" {
		t.Errorf("after the crash the lock is held by %q, want A", h)
	}
	if rep := f.lock(xseg.OpAcquire, "vol", "A", xseg.FlagNoSync); rep.err != nil {
		t.Errorf("re-entrant ACQUIRE after the crash: %v", rep.err)
	}
	if rep := f.lock(xseg.OpRelease, "vol", "A", 0); rep.err != nil {
		t.Errorf("RELEASE after the crash: %v", rep.err)
	}
}

func TestLockDir(t *testing.T) {
	lockDir := filepath.Join(t.TempDir(), "elsewhere")
	f := startFiled(t, "", "--lock-dir", lockDir)
	if rep := f.lock(xseg.OpAcquire, "vol7", "owner-7", xseg.FlagNoSync); rep.err != nil {
		t.Fatal(rep.err)
	}
	files := findFiles(t, lockDir, "vol7")
	if len(files) != 1 {
		t.Fatalf("lock files named vol7 under --lock-dir: %q, want one", files)
	}
	if b, err := os.ReadFile(files[0]); err != nil || string(b) != "owner-7\n" {
		t.Errorf("lock file holds %q (%v), want the owner", b, err)
	}
	if files := findFiles(t, f.dir, "vol7"); len(files) != 0 {
		t.Errorf("lock files under archip_dir: %q", files)
	}
	if rep := f.lock(xseg.OpRelease, "vol7", "owner-7", 0); rep.err != nil {
		t.Fatal(rep.err)
	}
	if files := findFiles(t, lockDir, "vol7"); len(files) != 0 {
		t.Errorf("lock files left after RELEASE: %q", files)
	}
}

// findFiles returns the regular files named name under root.
func findFiles(t testing.TB, root, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name() == name {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestHash(t *testing.T) {
	f := startFiled(t, "")
	// Content with a run of zeros inside (kept) and at the end (dropped).
	a, b := random(6, 3000), random(7, 1000)
	clear(b[800:])
	f.write("h", 0, a)
	f.write("h", 6000, b)
	content := append(append(append([]byte{}, a...), make([]byte, 3000)...), b[:800]...)
	sum := sha256.Sum256(content)
	want := wire.Hash{Hash: hex.EncodeToString(sum[:]), Size: uint64(len(content))}

	hash := func(name string) wire.Hash {
		t.Helper()
		rep := f.ok(req{op: xseg.OpHash, target: name})
		var h wire.Hash
		if err := h.Unmarshal(rep.data); err != nil {
			t.Fatalf("HASH %q answered %d bytes that are no Hash: %v", name, len(rep.data), err)
		}
		return h
	}
	if got := hash("h"); got != want {
		t.Fatalf("HASH answered %+v, want %+v", got, want)
	}
	// The content is stored under its hash, without the trailing zeros.
	if n := f.info(want.Hash); n != want.Size {
		t.Errorf("object %s has size %d, want %d", want.Hash, n, want.Size)
	}
	model(content).check(t, f, want.Hash, 0, 8*kib)
	// Again, and of the content object itself: the same answer.
	if got := hash("h"); got != want {
		t.Errorf("second HASH answered %+v", got)
	}
	if got := hash(want.Hash); got != want {
		t.Errorf("HASH of the content object answered %+v", got)
	}
	// A zero-padded copy hashes alike.
	f.write("h-padded", 0, content)
	f.write("h-padded", 64*kib, make([]byte, 4*kib))
	if got := hash("h-padded"); got != want {
		t.Errorf("HASH of a zero-padded copy answered %+v", got)
	}
	// Zeros only: the hash of nothing, and no object is stored.
	f.write("zeros", 0, make([]byte, 4*kib))
	empty := sha256.Sum256(nil)
	if got := hash("zeros"); got.Hash != hex.EncodeToString(empty[:]) || got.Size != 0 {
		t.Errorf("HASH of zeros answered %+v", got)
	}
	f.fails(req{op: xseg.OpInfo, target: hex.EncodeToString(empty[:])}, errs.ErrNotFound)
	f.fails(req{op: xseg.OpHash, target: "missing"}, errs.ErrNotFound)
	// No temporary objects are left behind.
	for _, path := range allFiles(t, f.dir) {
		if strings.Contains(filepath.Base(path), ".tmp.") {
			t.Errorf("temporary object left: %s", path)
		}
	}
}

// TestHashTooLarge: HASH reads its object into memory, so one byte
// written far out must not make filed allocate the whole sparse object.
func TestHashTooLarge(t *testing.T) {
	f := startFiled(t, "")
	f.write("block", blocker.DefaultMaxHashSize-1, []byte{1})
	if rep := f.ok(req{op: xseg.OpHash, target: "block"}); len(rep.data) == 0 {
		t.Error("HASH of the largest block answered nothing")
	}
	f.write("bigger", blocker.DefaultMaxHashSize, []byte{1})
	f.fails(req{op: xseg.OpHash, target: "bigger"}, errs.ErrTooLarge)
	f.write("sparse", 1<<40, []byte{1})
	f.fails(req{op: xseg.OpHash, target: "sparse"}, errs.ErrTooLarge)
	f.ok(req{op: xseg.OpPing})
	if f.proc.Exited() {
		t.Fatalf("filed exited: %s", f.proc.Output())
	}
}

// allFiles returns every regular file under root.
func allFiles(t testing.TB, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestObjectsSpreadOverSubdirectories(t *testing.T) {
	f := startFiled(t, "")
	const n = 64
	for i := range n {
		f.write(fmt.Sprintf("obj-%03d", i), 0, []byte{byte(i)})
	}
	f.ok(req{op: xseg.OpSync})
	leaves := map[string]bool{}
	objects := 0
	for _, path := range allFiles(t, f.dir) {
		rel, _ := filepath.Rel(f.dir, path)
		parts := strings.Split(rel, string(filepath.Separator))
		switch {
		case len(parts) == 1:
			// Only the format marker lives at the top, no object.
			if parts[0] != "FORMAT" {
				t.Errorf("file %s directly in archip_dir", rel)
			}
		case parts[0] == "tmp" || parts[0] == "locks":
		case len(parts) == 3 && isHex2(parts[0]) && isHex2(parts[1]) && strings.HasPrefix(parts[2], "obj-"):
			objects++
			leaves[parts[0]+"/"+parts[1]] = true
		default:
			t.Errorf("unexpected file %s", rel)
		}
	}
	if objects != n {
		t.Errorf("found %d object files at AA/BB/name, want %d", objects, n)
	}
	if len(leaves) < n/2 {
		t.Errorf("%d objects in only %d directories", n, len(leaves))
	}
}

func isHex2(s string) bool {
	return len(s) == 2 && strings.Trim(s, "0123456789abcdef") == ""
}

func TestUnservedOpsAndPing(t *testing.T) {
	f := startFiled(t, "")
	for _, op := range []xseg.Op{xseg.OpClone, xseg.OpMapR, xseg.OpMapW, xseg.OpOpen, xseg.OpClose,
		xseg.OpSnapshot, xseg.Op(17), xseg.OpRename, xseg.Op(20), xseg.OpNone, xseg.Op(200)} {
		f.fails(req{op: op, target: "x"}, errs.ErrNotSupported)
	}
	for _, op := range []xseg.Op{xseg.OpPing, xseg.OpSync, xseg.OpFlush} {
		f.ok(req{op: op, target: "x"})
	}
	f.ok(req{op: xseg.OpPing, flags: xseg.FlagFlush})
}

func TestSizeBeyondBuffer(t *testing.T) {
	f := startFiled(t, "")
	for _, op := range []xseg.Op{xseg.OpWrite, xseg.OpRead} {
		r, err := f.c.Alloc(4 * kib)
		if err != nil {
			t.Fatal(err)
		}
		r.SetOp(op)
		r.SetTarget("over")
		r.SetSize(uint64(len(r.Buffer())) + 1)
		rep, err := f.c.Call(context.Background(), r, filedPort)
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Err(); !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%v of %d bytes from a %d-byte buffer: %v, want ErrInvalid", op, rep.Size(), len(rep.Buffer()), err)
		}
		f.c.Put(rep)
	}
	f.fails(req{op: xseg.OpInfo, target: "over"}, errs.ErrNotFound)
}

func TestDirectIO(t *testing.T) {
	root := t.TempDir() // under $TMPDIR, /tmp: ext4 here
	s := newSegment(t, "blockertest", 64)
	dir := filepath.Join(root, "data")
	probe := testbin.Start(t, "filed", "--segment", s.Name(), "--portno-start", "1", "--archip-dir", dir, "--direct")
	testutil.WaitFor(t, 10*time.Second, "filed to bind port 1 or exit", func() bool {
		_, alive := s.Owner(filedPort)
		return alive || probe.Exited()
	})
	if probe.Exited() {
		if out := probe.Output(); strings.Contains(out, "refuses O_DIRECT") {
			t.Skipf("%s refuses O_DIRECT: %s", root, out)
		}
		t.Fatalf("filed --direct exited: %s", probe.Output())
	}
	c, err := peer.NewClient(s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := &filed{t: t, seg: s, c: c, dir: dir, proc: probe}

	var m model
	for i, w := range []struct{ off, n int }{{0, 4 * kib}, {8 * kib, 4 * kib}, {4 * mib, 4 * mib}, {64 * kib, 4 * kib}} {
		data := random(uint64(100+i), w.n)
		f.write("direct", uint64(w.off), data)
		m.write(w.off, data)
	}
	for _, r := range []struct{ off, n int }{{0, 4 * kib}, {4 * kib, 4 * kib}, {0, 4 * mib}, {4 * mib, 4 * mib}, {8 * kib, 8 * kib}} {
		m.check(t, f, "direct", r.off, r.n)
	}
	// Aligned I/O went around the page cache: none of the object's pages
	// is cached. (On tmpfs the page cache is the storage: nothing to see.)
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil && st.Type != unix.TMPFS_MAGIC {
		files := findFiles(t, dir, "direct")
		if len(files) != 1 {
			t.Fatalf("object files: %q", files)
		}
		if n, total := cachedPages(t, files[0]); n != 0 {
			t.Errorf("%d of the %d pages of the object are in the page cache after aligned I/O with --direct", n, total)
		}
	}
	// Unaligned I/O still works (through the page cache).
	f.write("direct", 3, []byte("unaligned"))
	m.write(3, []byte("unaligned"))
	m.check(t, f, "direct", 1, 100)
}

// cachedPages reports how many of a file's pages are in the page cache.
func cachedPages(t testing.TB, path string) (cached, total int) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	page := os.Getpagesize()
	vec := make([]byte, (len(mem)+page-1)/page)
	// x/sys/unix has no Mincore wrapper.
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(mem))), uintptr(len(mem)), uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		if v&1 != 0 {
			cached++
		}
	}
	return cached, len(vec)
}

// Waiting ACQUIREs hold no worker: with a single worker, four of them wait
// while the holder's RELEASE and ordinary I/O are still served.
func TestWaitingAcquiresHoldNoWorker(t *testing.T) {
	f := startFiled(t, "", "--nr-threads", "1", "--nr-ops", "16")
	const vol = "volume-busy"
	if rep := f.lock(xseg.OpAcquire, vol, "A", xseg.FlagNoSync); rep.err != nil {
		t.Fatal(rep.err)
	}
	waiting := make(chan error, 4)
	for _, owner := range []string{"B", "C", "D", "E"} {
		go func() {
			rep, err := f.send(context.Background(), req{op: xseg.OpAcquire, target: vol, p: &wire.Lock{Owner: owner}})
			if err == nil {
				err = rep.err
			}
			waiting <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	f.write("data-object", 0, []byte("served while four ACQUIREs wait"))
	if rep := f.lock(xseg.OpRelease, vol, "A", 0); rep.err != nil {
		t.Fatalf("RELEASE while others wait: %v", rep.err)
	}
	// One waiter gets the lock; release it in turn until all had it.
	for i := 0; i < 4; i++ {
		select {
		case err := <-waiting:
			if err != nil {
				t.Fatalf("waiting ACQUIRE: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("waiter %d not answered", i)
		}
		f.ok(req{op: xseg.OpRelease, target: vol, flags: xseg.FlagForce, p: &wire.Lock{Owner: "admin"}})
	}
}
