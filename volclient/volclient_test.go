package volclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Every call of the typed API against real peers (filed ×2, mapperd,
// vlmcd: internal/stacktest), with the errors it documents.

const mib = 1 << 20

// client dials the stack's vlmcd as a program would (Dial), released at
// the end of the test.
func client(t *testing.T, s *stacktest.Stack) *volclient.Client {
	t.Helper()
	c, err := volclient.Dial(s.Seg.Name(), stacktest.Vlmcd)
	if err != nil {
		t.Fatalf("Dial %s port %d: %v", s.Seg.Name(), stacktest.Vlmcd, err)
	}
	t.Cleanup(c.Disconnect)
	return c
}

// fails checks that err wraps want and names what, for a call described
// by call.
func fails(t *testing.T, call string, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", call, err, want)
		return
	}
	if !strings.Contains(err.Error(), what) {
		t.Errorf("%s = %v, does not name %q", call, err, what)
	}
}

func ok(t *testing.T, call string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", call, err)
	}
}

func TestCreateInfoRemove(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "vol-a", 64*mib))
	vi, err := c.Info(ctx, "vol-a")
	ok(t, "Info", err)
	if vi.Name != "vol-a" || vi.Size != 64*mib || vi.ReadOnly || vi.Snapshot || vi.Parent != "" || vi.LockOwner != "" || vi.BlockSize != 4*mib || vi.Epoch == 0 {
		t.Errorf("Info of a new 64 MiB volume: %+v", vi)
	}
	fails(t, "Create of a taken name", c.Create(ctx, "vol-a", mib), errs.ErrExists, "vol-a")
	fails(t, "Create of size 0", c.Create(ctx, "vol-b", 0), errs.ErrInvalid, "vol-b")
	fails(t, "Create beyond MaxSize", c.Create(ctx, "vol-b", volclient.MaxSize+512), errs.ErrTooLarge, "vol-b")
	fails(t, "Create with a '/'", c.Create(ctx, "vol/b", mib), errs.ErrInvalid, "vol/b")
	long := strings.Repeat("n", xseg.MaxTarget+1)
	fails(t, "Create with a name longer than a request holds", c.Create(ctx, long, mib), errs.ErrInvalid, long[:30])
	ok(t, "Create of MaxSize", c.Create(ctx, "vol-max", volclient.MaxSize))
	if vi, err := c.Info(ctx, "vol-max"); err != nil || vi.Size != volclient.MaxSize {
		t.Errorf("Info of a volume of MaxSize: %+v, %v", vi, err)
	}
	ok(t, "Remove", c.Remove(ctx, "vol-a"))
	_, err = c.Info(ctx, "vol-a")
	fails(t, "Info after Remove", err, errs.ErrNotFound, "vol-a")
	fails(t, "Remove of a missing volume", c.Remove(ctx, "vol-a"), errs.ErrNotFound, "vol-a")
	// The name is free again: a new volume, a later epoch.
	ok(t, "Create again", c.Create(ctx, "vol-a", mib))
	if vi2, err := c.Info(ctx, "vol-a"); err != nil || vi2.Epoch <= vi.Epoch || vi2.Size != mib {
		t.Errorf("Info of the new vol-a: %+v, %v (the old one had epoch %d)", vi2, err, vi.Epoch)
	}
}

func TestSnapshotClone(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "base", 8*mib))
	s.Write(t, "base", 0, testutil.Pattern(mib, 1), false)
	ok(t, "Snapshot", c.Snapshot(ctx, "base", "base@1"))
	fails(t, "Snapshot to a taken name", c.Snapshot(ctx, "base", "base@1"), errs.ErrExists, "base@1")
	fails(t, "Snapshot of a missing volume", c.Snapshot(ctx, "nobody", "nobody@1"), errs.ErrNotFound, "nobody")
	si, err := c.Info(ctx, "base@1")
	ok(t, "Info of the snapshot", err)
	if !si.Snapshot || !si.ReadOnly || si.Size != 8*mib {
		t.Errorf("Info of a snapshot: %+v", si)
	}

	ok(t, "Clone of the parent's size", c.Clone(ctx, "base@1", "child", 0))
	ci, err := c.Info(ctx, "child")
	ok(t, "Info of the clone", err)
	if ci.Parent != "base@1" || ci.Size != 8*mib || ci.ReadOnly || ci.Snapshot {
		t.Errorf("Info of a clone: %+v", ci)
	}
	if got := s.Read(t, "child", 0, mib); !bytes.Equal(got, testutil.Pattern(mib, 1)) {
		t.Error("the clone does not read its parent's data")
	}
	ok(t, "Clone larger", c.Clone(ctx, "base@1", "bigger", 16*mib))
	if bi := s.Info(t, "bigger"); bi.Size != 16*mib {
		t.Errorf("clone of 16 MiB: size %d", bi.Size)
	}
	fails(t, "Clone smaller than the parent", c.Clone(ctx, "base@1", "smaller", 4*mib), errs.ErrInvalid, "smaller")
	fails(t, "Clone to a taken name", c.Clone(ctx, "base@1", "child", 0), errs.ErrExists, "child")
	fails(t, "Clone of a volume, not a snapshot", c.Clone(ctx, "base", "c2", 0), errs.ErrInvalid, "base")
	fails(t, "Clone of a missing snapshot", c.Clone(ctx, "nobody@1", "c3", 0), errs.ErrNotFound, "nobody@1")
	fails(t, "Clone of no snapshot", c.Clone(ctx, "", "c4", 0), errs.ErrInvalid, "c4")
	fails(t, "Clone beyond MaxSize", c.Clone(ctx, "base@1", "c5", volclient.MaxSize+512), errs.ErrTooLarge, "c5")
	// A snapshot that clones use stays removable; the clones keep its data.
	ok(t, "Remove of the snapshot", c.Remove(ctx, "base@1"))
	if got := s.Read(t, "child", 0, mib); !bytes.Equal(got, testutil.Pattern(mib, 1)) {
		t.Error("the clone lost its parent's data when the snapshot was removed")
	}
}

func TestRenameResize(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "old", 8*mib))
	ok(t, "Create", c.Create(ctx, "other", mib))
	s.Write(t, "old", 7*mib, testutil.Pattern(mib, 2), false)
	ok(t, "Rename", c.Rename(ctx, "old", "new"))
	_, err := c.Info(ctx, "old")
	fails(t, "Info of the old name", err, errs.ErrNotFound, "old")
	if got := s.Read(t, "new", 7*mib, mib); !bytes.Equal(got, testutil.Pattern(mib, 2)) {
		t.Error("the renamed volume lost its data")
	}
	fails(t, "Rename to a taken name", c.Rename(ctx, "new", "other"), errs.ErrExists, "other")
	fails(t, "Rename of a missing volume", c.Rename(ctx, "old", "x"), errs.ErrNotFound, "old")
	fails(t, "Rename to a bad name", c.Rename(ctx, "new", "a/b"), errs.ErrInvalid, "a/b")

	ok(t, "Resize up", c.Resize(ctx, "new", 16*mib))
	if vi := s.Info(t, "new"); vi.Size != 16*mib {
		t.Errorf("size %d after Resize to 16 MiB", vi.Size)
	}
	fails(t, "Resize down", c.Resize(ctx, "new", 4*mib), errs.ErrInvalid, "new")
	fails(t, "Resize to 0", c.Resize(ctx, "new", 0), errs.ErrInvalid, "new")
	fails(t, "ResizeForce to 0", c.ResizeForce(ctx, "new", 0), errs.ErrInvalid, "new")
	fails(t, "Resize beyond MaxSize", c.Resize(ctx, "new", volclient.MaxSize+512), errs.ErrTooLarge, "new")
	fails(t, "Resize of a missing volume", c.Resize(ctx, "old", mib), errs.ErrNotFound, "old")
	ok(t, "ResizeForce down", c.ResizeForce(ctx, "new", 4*mib))
	if vi := s.Info(t, "new"); vi.Size != 4*mib {
		t.Errorf("size %d after ResizeForce to 4 MiB", vi.Size)
	}
	// Growing again does not bring back what the shrink cut off.
	ok(t, "Resize up again", c.Resize(ctx, "new", 8*mib))
	if got := s.Read(t, "new", 7*mib, mib); !bytes.Equal(got, make([]byte, mib)) {
		t.Error("data past a shrink came back")
	}
	ok(t, "Snapshot", c.Snapshot(ctx, "new", "new@1"))
	fails(t, "Resize of a snapshot", c.Resize(ctx, "new@1", 16*mib), errs.ErrReadOnly, "new@1")
}

// TestLocks runs two hosts on one storage: the lock calls and the
// "locked by <owner>" errors.
func TestLocks(t *testing.T) {
	data, maps := t.TempDir(), t.TempDir()
	a := client(t, stacktest.Start(t, stacktest.Options{DataDir: data, MapDir: maps, HostID: "host-a"}))
	b := client(t, stacktest.Start(t, stacktest.Options{DataDir: data, MapDir: maps, HostID: "host-b"}))
	ctx := t.Context()
	ok(t, "Create", a.Create(ctx, "shared", 8*mib))
	owner := func(want string) {
		t.Helper()
		vi, err := b.Info(ctx, "shared")
		ok(t, "Info", err)
		if vi.LockOwner != want {
			t.Errorf("lock owner %q, want %q", vi.LockOwner, want)
		}
	}
	ok(t, "Open by host-a", a.Open(ctx, "shared"))
	ok(t, "Open by host-a again", a.Open(ctx, "shared"))
	owner("host-a")
	fails(t, "Open by host-b", b.Open(ctx, "shared"), errs.ErrLocked, `volume "shared": locked by host-a`)
	fails(t, "Lock by host-b", b.Lock(ctx, "shared"), errs.ErrLocked, `volume "shared": locked by host-a`)
	fails(t, "Unlock by host-b", b.Unlock(ctx, "shared"), errs.ErrNotOwner, "host-a")
	ok(t, "Close by host-a", a.Close(ctx, "shared"))
	owner("")
	ok(t, "Lock by host-b", b.Lock(ctx, "shared"))
	ok(t, "Lock by host-b again", b.Lock(ctx, "shared"))
	owner("host-b")
	fails(t, "Lock by host-a", a.Lock(ctx, "shared"), errs.ErrLocked, "locked by host-b")
	ok(t, "UnlockForce by host-a", a.UnlockForce(ctx, "shared"))
	owner("")
	ok(t, "Lock by host-a", a.Lock(ctx, "shared"))
	ok(t, "Unlock by host-a", a.Unlock(ctx, "shared"))
	owner("")
	fails(t, "Lock of a missing volume", a.Lock(ctx, "nobody"), errs.ErrNotFound, "nobody")
	fails(t, "Open of a missing volume", a.Open(ctx, "nobody"), errs.ErrNotFound, "nobody")
}

func TestSessionIO(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "disk", 16*mib))
	v, err := c.OpenSession(ctx, "disk")
	ok(t, "OpenSession", err)
	if v.Name != "disk" || v.Size != 16*mib || v.ReadOnly || v.ID == "" || v.BlockSize != 4*mib {
		t.Errorf("session of a 16 MiB volume: %+v", v)
	}
	// Larger than MaxIO (split), across block boundaries, unaligned.
	big := testutil.Pattern(volclient.MaxIO+mib+123, 3)
	ok(t, "WriteAt", v.WriteAt(ctx, big, 3*mib-7, false))
	got := make([]byte, len(big))
	ok(t, "ReadAt", v.ReadAt(ctx, got, 3*mib-7))
	if !bytes.Equal(got, big) {
		t.Error("ReadAt does not read what WriteAt wrote")
	}
	ok(t, "WriteAt with FUA", v.WriteAt(ctx, testutil.Pattern(4096, 4), 15*mib, true))
	ok(t, "Flush", v.Flush(ctx))
	ext, err := v.Allocated(ctx, 0, 16*mib)
	ok(t, "Allocated", err)
	// Blocks 0 ([3 MiB, 8 MiB + ...) touches blocks 0, 1 and 2) and 3.
	if want := []volclient.Extent{{0, 12 * mib}, {12 * mib, 4 * mib}}; !equalExtents(ext, want) {
		t.Errorf("Allocated = %v, want the blocks %v", ext, want)
	}
	ok(t, "Trim", v.Trim(ctx, 4*mib, 4*mib))
	ok(t, "ReadAt after Trim", v.ReadAt(ctx, got[:4*mib], 4*mib))
	if !bytes.Equal(got[:4*mib], make([]byte, 4*mib)) {
		t.Error("a trimmed block does not read as zeros")
	}
	ext, err = v.Allocated(ctx, 0, 16*mib)
	ok(t, "Allocated after Trim", err)
	for _, x := range ext {
		if x.Offset < 8*mib && x.Offset+x.Size > 4*mib {
			t.Errorf("Allocated after Trim of [4 MiB, 8 MiB) = %v", ext)
		}
	}
	fails(t, "ReadAt past the end", v.ReadAt(ctx, make([]byte, 2), 16*mib-1), errs.ErrInvalid, "disk")
	fails(t, "WriteAt past the end", v.WriteAt(ctx, make([]byte, 1), 16*mib, false), errs.ErrInvalid, "disk")
	fails(t, "Trim past the end", v.Trim(ctx, 12*mib, 8*mib), errs.ErrInvalid, "beyond its 16777216 bytes")
	_, err = v.Allocated(ctx, 12*mib, 8*mib)
	fails(t, "Allocated past the end", err, errs.ErrInvalid, "beyond its size 16777216")

	// A lent buffer goes as the very request: no copy either way.
	buf, err := c.Lend(64 << 10)
	ok(t, "Lend", err)
	copy(buf, testutil.Pattern(len(buf), 5))
	ok(t, "WriteAt of a lent buffer", v.WriteAt(ctx, buf, mib, false))
	clear(buf)
	ok(t, "ReadAt into a lent buffer", v.ReadAt(ctx, buf, mib))
	if !bytes.Equal(buf, testutil.Pattern(len(buf), 5)) {
		t.Error("a lent buffer does not read back what it wrote")
	}
	c.Unlend(buf)
	if got := s.Read(t, "disk", mib, 64<<10); !bytes.Equal(got, testutil.Pattern(64<<10, 5)) {
		t.Error("another session does not read the lent buffer's write")
	}

	// An open session keeps the volume: Remove is refused, RemoveForce
	// is not, and the session's I/O fails from then on, also once the
	// name is a new volume.
	fails(t, "Remove with a session open", c.Remove(ctx, "disk"), errs.ErrBusy, "disk")
	ok(t, "RemoveForce", c.RemoveForce(ctx, "disk"))
	if err := v.ReadAt(ctx, got[:4096], 0); err == nil {
		t.Error("ReadAt of a removed volume succeeded")
	}
	ok(t, "Create again", c.Create(ctx, "disk", 16*mib))
	if err := v.ReadAt(ctx, got[:4096], 0); err == nil {
		t.Error("ReadAt through a session of the removed volume read the new one")
	}
	if err := v.WriteAt(ctx, got[:4096], 0, false); err == nil {
		t.Error("WriteAt through a session of the removed volume wrote the new one")
	}
	ok(t, "Close", v.Close(ctx))
	ok(t, "Remove", c.Remove(ctx, "disk"))
	_, err = c.OpenSession(ctx, "disk")
	fails(t, "OpenSession of a missing volume", err, errs.ErrNotFound, "disk")
}

// TestClosedSession: a Volume refuses I/O once closed (a write would take
// the volume's lock again, and no session would give it back).
func TestClosedSession(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "vol", 4*mib))
	v, err := c.OpenSession(ctx, "vol")
	ok(t, "OpenSession", err)
	ok(t, "WriteAt", v.WriteAt(ctx, []byte("x"), 0, false))
	ok(t, "Close", v.Close(ctx))
	if vi := s.Info(t, "vol"); vi.LockOwner != "" {
		t.Fatalf("lock held by %q after the last session closed", vi.LockOwner)
	}
	p := make([]byte, 1)
	fails(t, "ReadAt after Close", v.ReadAt(ctx, p, 0), errs.ErrInvalid, `volume "vol": session closed`)
	fails(t, "WriteAt after Close", v.WriteAt(ctx, p, 0, false), errs.ErrInvalid, `volume "vol": session closed`)
	fails(t, "Flush after Close", v.Flush(ctx), errs.ErrInvalid, `volume "vol": session closed`)
	fails(t, "Trim after Close", v.Trim(ctx, 0, 4*mib), errs.ErrInvalid, `volume "vol": session closed`)
	_, err = v.Allocated(ctx, 0, 4*mib)
	fails(t, "Allocated after Close", err, errs.ErrInvalid, `volume "vol": session closed`)
	if vi := s.Info(t, "vol"); vi.LockOwner != "" {
		t.Errorf("lock held by %q after I/O of a closed session", vi.LockOwner)
	}
	ok(t, "Close again", v.Close(ctx))
}

func equalExtents(a, b []volclient.Extent) bool {
	// Adjacent extents may come merged or not.
	merge := func(x []volclient.Extent) []volclient.Extent {
		var out []volclient.Extent
		for _, e := range x {
			if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Size == e.Offset {
				out[n-1].Size += e.Size
				continue
			}
			out = append(out, e)
		}
		return out
	}
	return slices.Equal(merge(a), merge(b))
}

func TestSnapshotSession(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "src", 4*mib))
	s.Write(t, "src", 0, testutil.Pattern(4096, 6), false)
	ok(t, "Snapshot", c.Snapshot(ctx, "src", "src@1"))
	v, err := c.OpenSession(ctx, "src@1")
	ok(t, "OpenSession of a snapshot", err)
	defer v.Close(ctx)
	if !v.ReadOnly {
		t.Errorf("session of a snapshot not read-only: %+v", v)
	}
	got := make([]byte, 4096)
	ok(t, "ReadAt", v.ReadAt(ctx, got, 0))
	if !bytes.Equal(got, testutil.Pattern(4096, 6)) {
		t.Error("the snapshot does not read its data")
	}
	fails(t, "WriteAt to a snapshot", v.WriteAt(ctx, got, 0, false), errs.ErrReadOnly, "src@1")
}

// TestList lists more names than one reply holds.
func TestList(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c, ctx := client(t, s), t.Context()
	if names, err := c.List(ctx); err != nil || len(names) != 0 {
		t.Fatalf("List of no volumes = %q, %v", names, err)
	}
	// Long names, so that a few hundred fill more than one reply.
	var want []string
	for i := range 400 {
		want = append(want, fmt.Sprintf("%s-%03d", strings.Repeat("v", 180), i))
	}
	for i, n := range want {
		if i%2 == 0 {
			ok(t, "Create", c.Create(ctx, n, mib))
		} else { // snapshots are listed too
			ok(t, "Snapshot", c.Snapshot(ctx, want[i-1], n))
		}
	}
	// The first reply says there is more: List pages.
	var page wire.Names
	err := c.Do(ctx, volclient.Call{Op: xseg.OpList, Payload: &wire.List{}, BufLen: 64 << 10,
		Got: func(r *xseg.Request) error { return page.Unmarshal(r.Data()) }})
	ok(t, "LIST", err)
	if !page.More || len(page.Names) >= len(want) {
		t.Fatalf("one reply holds %d of %d names (more: %v): the test does not page", len(page.Names), len(want), page.More)
	}
	got, err := c.List(ctx)
	ok(t, "List", err)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("List returned %d names, want %d (first page %d)", len(got), len(want), len(page.Names))
	}
}

func TestPingDial(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{})
	c := client(t, s)
	ok(t, "Ping", c.Ping(t.Context()))
	ok(t, "Ping through New", volclient.New(s.Client, stacktest.Vlmcd).Ping(t.Context()))
	_, err := volclient.Dial(s.Seg.Name(), 7) // a static port nobody binds
	fails(t, "Dial of a port nobody binds", err, errs.ErrNoPeer, "port 7")
	_, err = volclient.Dial("no-such-segment-volclient", stacktest.Vlmcd)
	fails(t, "Dial of a missing segment", err, errs.ErrNotFound, "no-such-segment-volclient")
	// Disconnect gives the port back: many Dials do not run out of ports.
	for i := range 20 {
		d, err := volclient.Dial(s.Seg.Name(), stacktest.Vlmcd)
		ok(t, fmt.Sprintf("Dial %d", i), err)
		ok(t, "Ping", d.Ping(t.Context()))
		d.Disconnect()
	}
	// A cancelled context ends a call with the context's error.
	cctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Info(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Info with a cancelled context = %v, want context.Canceled", err)
	}
	// Once vlmcd is gone, calls fail as such.
	s.Stop(t)
	for call, err := range map[string]error{"Ping": c.Ping(t.Context()), "List": func() error { _, err := c.List(t.Context()); return err }()} {
		if !errs.PeerGone(err) || strings.Contains(err.Error(), `volume ""`) {
			t.Errorf("%s after vlmcd stopped = %v, want a gone peer, named by the op (it is about no volume)", call, err)
		}
	}
}
