// Package stacktest runs a whole Archipelago stack as real processes for
// tests: two file blockers (data and maps), mapperd and vlmcd on a segment
// of their own, and offers the volume operations through the segment, as
// a tool would send them: through the typed volclient API.
//
// Each operation X comes twice: X(t, ...) fails t (t.Fatalf naming the
// step) if the operation fails, and TryX(...) returns the error, for tests
// that expect one.
package stacktest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Ports of the stack's peers.
const (
	BlockerB = 1
	BlockerM = 2
	Mapper   = 3
	Vlmcd    = 4
	NBD      = 5
)

// Options say where a stack keeps its objects and who it is.
type Options struct {
	DataDir, MapDir string // default: fresh temporary directories
	HostID          string // default "host-a"
	BlockSize       int    // default 4 MiB
	NBD             bool   // also run the block endpoint (nbdd)
}

// Stack is a running stack.
type Stack struct {
	t      testing.TB
	Opts   Options
	Seg    *xseg.Segment
	Client *peer.Client
	vol    *volclient.Client // of vlmcd, through Client
	procs  map[string]*testbin.Proc
	// Socket is the block endpoint's NBD socket (with Options.NBD).
	Socket string
}

var serial atomic.Int32

// Start creates a segment and starts the four peers.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.MapDir == "" {
		o.MapDir = t.TempDir()
	}
	if o.HostID == "" {
		o.HostID = "host-a"
	}
	if o.BlockSize == 0 {
		o.BlockSize = 4 << 20
	}
	name := fmt.Sprintf("stack-%d-%d-%s", os.Getpid(), serial.Add(1), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if len(name) > 100 {
		name = name[:100]
	}
	xseg.Destroy(name)
	seg, err := xseg.Create(xseg.Config{Name: name, SizeMiB: 256, Ports: 16, DynPorts: 8})
	if err != nil {
		t.Fatalf("stacktest: create segment %q: %v", name, err)
	}
	s := &Stack{t: t, Opts: o, Seg: seg, procs: map[string]*testbin.Proc{}}
	if o.NBD {
		s.Socket = filepath.Join(t.TempDir(), "nbd.sock")
	}
	t.Cleanup(func() {
		for _, p := range s.procs {
			p.Kill()
		}
		if s.Client != nil {
			s.Client.Close()
		}
		seg.Recover()
		if err := seg.Check(); err != nil {
			t.Error(err)
		}
		seg.Close()
		xseg.Destroy(name)
	})
	s.startPeers(t)
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatalf("stacktest: join segment %q as a client: %v", name, err)
	}
	s.Client = c
	s.vol = volclient.New(c, Vlmcd)
	return s
}

func (s *Stack) args(port int, extra ...string) []string {
	return append([]string{"--segment", s.Seg.Name(), "--portno-start", fmt.Sprint(port), "--log-level", "1", "--nr-ops", "128", "--nr-threads", "16"}, extra...)
}

// startPeers starts the peers, which live as long as the stack, and
// fails t if they do not come up.
func (s *Stack) startPeers(t testing.TB) {
	t.Helper()
	s.procs["blockerb"] = testbin.Start(s.t, "filed", s.args(BlockerB, "--archip-dir", s.Opts.DataDir)...)
	s.procs["blockerm"] = testbin.Start(s.t, "filed", s.args(BlockerM, "--archip-dir", s.Opts.MapDir)...)
	s.procs["mapperd"] = testbin.Start(s.t, "mapperd", s.args(Mapper, "--blockerm-port", fmt.Sprint(BlockerM), "--blockerb-port", fmt.Sprint(BlockerB),
		"--host-id", s.Opts.HostID, "--block-size", fmt.Sprint(s.Opts.BlockSize))...)
	s.procs["vlmcd"] = testbin.Start(s.t, "vlmcd", s.args(Vlmcd, "--mapper-port", fmt.Sprint(Mapper), "--blocker-port", fmt.Sprint(BlockerB))...)
	ports := []int{BlockerB, BlockerM, Mapper, Vlmcd}
	if s.Socket != "" {
		s.procs["nbdd"] = testbin.Start(s.t, "nbdd", s.args(NBD, "--vlmcd-port", fmt.Sprint(Vlmcd), "--socket", s.Socket)...)
		ports = append(ports, NBD)
	}
	for _, port := range ports {
		testutil.WaitFor(t, 15*time.Second, fmt.Sprintf("port %d bound", port), func() bool { _, ok := s.Seg.Owner(port); return ok })
	}
	if s.Socket != "" {
		testutil.WaitFor(t, 15*time.Second, "NBD socket", func() bool { _, err := os.Stat(s.Socket); return err == nil })
	}
}

// Restart kills every peer with SIGKILL and starts them again (with
// HostID, which a test may change first); t fails if they do not come
// up.
func (s *Stack) Restart(t testing.TB) {
	t.Helper()
	for _, p := range s.procs {
		p.Kill()
	}
	s.startPeers(t)
}

// Stop stops every peer gracefully; t fails if one does not stop.
func (s *Stack) Stop(t testing.TB) {
	t.Helper()
	for n, p := range s.procs {
		if err := p.Stop(15 * time.Second); err != nil {
			t.Errorf("stacktest: stop %s: %v", n, err)
		}
	}
}

// Volumes is the typed client of the stack's vlmcd, for calls the
// harness does not wrap.
func (s *Stack) Volumes() *volclient.Client { return s.vol }

// ctx bounds one harness call.
func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// must fails t at step if err is set.
func must(t testing.TB, step string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("stacktest: %s: %v", step, err)
	}
}

// TryCreate makes a blank volume.
func (s *Stack) TryCreate(name string, size uint64) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Create(c, name, size)
}

// Create makes a blank volume; t fails if it cannot.
func (s *Stack) Create(t testing.TB, name string, size uint64) {
	t.Helper()
	must(t, fmt.Sprintf("create %q of %d bytes", name, size), s.TryCreate(name, size))
}

// TryClone makes a clone of a snapshot (size 0: the parent's).
func (s *Stack) TryClone(parent, name string, size uint64) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Clone(c, parent, name, size)
}

// Clone makes a clone of a snapshot (size 0: the parent's); t fails if it
// cannot.
func (s *Stack) Clone(t testing.TB, parent, name string, size uint64) {
	t.Helper()
	must(t, fmt.Sprintf("clone %q of %q, %d bytes", name, parent, size), s.TryClone(parent, name, size))
}

// TrySnapshot takes a snapshot.
func (s *Stack) TrySnapshot(vol, snap string) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Snapshot(c, vol, snap)
}

// Snapshot takes a snapshot; t fails if it cannot.
func (s *Stack) Snapshot(t testing.TB, vol, snap string) {
	t.Helper()
	must(t, fmt.Sprintf("snapshot %q of %q", snap, vol), s.TrySnapshot(vol, snap))
}

// TryRemove removes a volume or snapshot.
func (s *Stack) TryRemove(name string) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Remove(c, name)
}

// Remove removes a volume or snapshot; t fails if it cannot.
func (s *Stack) Remove(t testing.TB, name string) {
	t.Helper()
	must(t, fmt.Sprintf("remove %q", name), s.TryRemove(name))
}

// TryRename renames a volume or snapshot.
func (s *Stack) TryRename(old, new string) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Rename(c, old, new)
}

// Rename renames a volume or snapshot; t fails if it cannot.
func (s *Stack) Rename(t testing.TB, old, new string) {
	t.Helper()
	must(t, fmt.Sprintf("rename %q to %q", old, new), s.TryRename(old, new))
}

// TryResize resizes a volume; only with force may it shrink.
func (s *Stack) TryResize(name string, size uint64, force bool) error {
	c, cancel := ctx()
	defer cancel()
	if force {
		return s.vol.ResizeForce(c, name, size)
	}
	return s.vol.Resize(c, name, size)
}

// Resize resizes a volume (shrinks it only with force); t fails if it
// cannot.
func (s *Stack) Resize(t testing.TB, name string, size uint64, force bool) {
	t.Helper()
	must(t, fmt.Sprintf("resize %q to %d bytes (force %v)", name, size, force), s.TryResize(name, size, force))
}

// TryInfo returns what a volume or snapshot is.
func (s *Stack) TryInfo(name string) (volclient.Info, error) {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Info(c, name)
}

// Info returns what a volume or snapshot is; t fails if it cannot.
func (s *Stack) Info(t testing.TB, name string) volclient.Info {
	t.Helper()
	vi, err := s.TryInfo(name)
	must(t, fmt.Sprintf("info %q", name), err)
	return vi
}

// TryOpen opens a volume on this host, as `vlmc open` (takes its lock).
func (s *Stack) TryOpen(name string) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Open(c, name)
}

// Open opens a volume on this host; t fails if it cannot.
func (s *Stack) Open(t testing.TB, name string) {
	t.Helper()
	must(t, fmt.Sprintf("open %q", name), s.TryOpen(name))
}

// TryLock takes a volume's lock for this host, without waiting.
func (s *Stack) TryLock(name string) error {
	c, cancel := ctx()
	defer cancel()
	return s.vol.Lock(c, name)
}

// Lock takes a volume's lock for this host; t fails if it cannot.
func (s *Stack) Lock(t testing.TB, name string) {
	t.Helper()
	must(t, fmt.Sprintf("lock %q", name), s.TryLock(name))
}

// TryUnlock releases a volume's lock; with force, whoever holds it.
func (s *Stack) TryUnlock(name string, force bool) error {
	c, cancel := ctx()
	defer cancel()
	if force {
		return s.vol.UnlockForce(c, name)
	}
	return s.vol.Unlock(c, name)
}

// Unlock releases a volume's lock (with force, whoever holds it); t
// fails if it cannot.
func (s *Stack) Unlock(t testing.TB, name string, force bool) {
	t.Helper()
	must(t, fmt.Sprintf("unlock %q (force %v)", name, force), s.TryUnlock(name, force))
}

// Session opens a session of a volume for I/O through vlmcd, closed when
// t ends (unless the peers are gone by then: a Restart after Session
// kills them first); t fails if it cannot.
func (s *Stack) Session(t testing.TB, name string) *volclient.Volume {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	v, err := s.vol.OpenSession(c, name)
	must(t, fmt.Sprintf("open a session of %q", name), err)
	t.Cleanup(func() {
		if !s.running() {
			return // the session died with the peers
		}
		c, cancel := ctx()
		defer cancel()
		if err := v.Close(c); err != nil {
			t.Errorf("stacktest: close the session of %q: %v", name, err)
		}
	})
	return v
}

// running tells whether every peer still runs.
func (s *Stack) running() bool {
	for _, p := range s.procs {
		if p.Exited() {
			return false
		}
	}
	return true
}

// session runs fn in a session of volume name opened for it alone.
func (s *Stack) session(name string, fn func(c context.Context, v *volclient.Volume) error) error {
	c, cancel := ctx()
	defer cancel()
	v, err := s.vol.OpenSession(c, name)
	if err != nil {
		return err
	}
	err = fn(c, v)
	if cerr := v.Close(c); err == nil {
		err = cerr
	}
	return err
}

// TryWrite writes data at off of a volume through vlmcd, in a session of
// its own (fua: durable when it returns).
func (s *Stack) TryWrite(name string, off uint64, data []byte, fua bool) error {
	return s.session(name, func(c context.Context, v *volclient.Volume) error { return v.WriteAt(c, data, off, fua) })
}

// Write writes data at off of a volume; t fails if it cannot.
func (s *Stack) Write(t testing.TB, name string, off uint64, data []byte, fua bool) {
	t.Helper()
	must(t, fmt.Sprintf("write %q [%d,+%d)", name, off, len(data)), s.TryWrite(name, off, data, fua))
}

// TryRead reads n bytes at off of a volume through vlmcd, in a session of
// its own.
func (s *Stack) TryRead(name string, off uint64, n int) ([]byte, error) {
	p := make([]byte, n)
	err := s.session(name, func(c context.Context, v *volclient.Volume) error { return v.ReadAt(c, p, off) })
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Read reads n bytes at off of a volume; t fails if it cannot.
func (s *Stack) Read(t testing.TB, name string, off uint64, n int) []byte {
	t.Helper()
	p, err := s.TryRead(name, off, n)
	must(t, fmt.Sprintf("read %q [%d,+%d)", name, off, n), err)
	return p
}

// URI is the NBD URI of a volume on the stack's endpoint.
func (s *Stack) URI(volume string) string {
	return nbduri.URI(s.Socket, volume)
}

// TryMapRead asks the mapper which objects hold [off, off+n) of a volume
// (a mapper op: no volume API has it).
func (s *Stack) TryMapRead(name string, off uint64, n int) ([]wire.MapPiece, error) {
	c, cancel := ctx()
	defer cancel()
	var mr wire.MapReply
	err := volclient.New(s.Client, Mapper).Do(c, volclient.Call{Op: xseg.OpMapR, Target: name, Offset: off, Size: uint64(n), BufLen: 64 << 10,
		Got: func(r *xseg.Request) error { return mr.Unmarshal(r.Data()) }})
	return mr.Pieces, err
}

// MapRead is TryMapRead; t fails if it cannot.
func (s *Stack) MapRead(t testing.TB, name string, off uint64, n int) []wire.MapPiece {
	t.Helper()
	p, err := s.TryMapRead(name, off, n)
	must(t, fmt.Sprintf("map read %q [%d,+%d)", name, off, n), err)
	return p
}
