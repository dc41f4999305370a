// Package stacktest runs a whole Archipelago stack as real processes for
// tests: two file blockers (data and maps), mapperd and vlmcd on a segment
// of their own, and offers the volume operations through the segment, as
// a tool would send them.
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
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
	"github.com/archipelago-go/archipelago/wire"
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
		t.Fatal(err)
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
	s.startPeers()
	c, err := peer.NewClient(seg)
	if err != nil {
		t.Fatal(err)
	}
	s.Client = c
	return s
}

func (s *Stack) args(port int, extra ...string) []string {
	return append([]string{"--segment", s.Seg.Name(), "--portno-start", fmt.Sprint(port), "--log-level", "1", "--nr-ops", "128", "--nr-threads", "16"}, extra...)
}

func (s *Stack) startPeers() {
	t := s.t
	t.Helper()
	s.procs["blockerb"] = testbin.Start(t, "filed", s.args(BlockerB, "--archip-dir", s.Opts.DataDir)...)
	s.procs["blockerm"] = testbin.Start(t, "filed", s.args(BlockerM, "--archip-dir", s.Opts.MapDir)...)
	s.procs["mapperd"] = testbin.Start(t, "mapperd", s.args(Mapper, "--blockerm-port", fmt.Sprint(BlockerM), "--blockerb-port", fmt.Sprint(BlockerB),
		"--host-id", s.Opts.HostID, "--block-size", fmt.Sprint(s.Opts.BlockSize))...)
	s.procs["vlmcd"] = testbin.Start(t, "vlmcd", s.args(Vlmcd, "--mapper-port", fmt.Sprint(Mapper), "--blocker-port", fmt.Sprint(BlockerB))...)
	ports := []int{BlockerB, BlockerM, Mapper, Vlmcd}
	if s.Socket != "" {
		s.procs["nbdd"] = testbin.Start(t, "nbdd", s.args(NBD, "--vlmcd-port", fmt.Sprint(Vlmcd), "--socket", s.Socket)...)
		ports = append(ports, NBD)
	}
	for _, port := range ports {
		testbin.WaitFor(t, 15*time.Second, fmt.Sprintf("port %d bound", port), func() bool { _, ok := s.Seg.Owner(port); return ok })
	}
	if s.Socket != "" {
		testbin.WaitFor(t, 15*time.Second, "NBD socket", func() bool { _, err := os.Stat(s.Socket); return err == nil })
	}
}

// Restart kills every peer with SIGKILL and starts them again (with
// HostID, which a test may change first).
func (s *Stack) Restart() {
	s.t.Helper()
	for _, p := range s.procs {
		p.Kill()
	}
	s.startPeers()
}

// Stop stops every peer gracefully.
func (s *Stack) Stop() {
	for n, p := range s.procs {
		if err := p.Stop(15 * time.Second); err != nil {
			s.t.Errorf("%s: %v", n, err)
		}
	}
}

// Do sends op about target to port dst with payload req (or raw data) in
// a buffer of at least bufLen bytes and returns the reply's data.
func (s *Stack) Do(dst int, op xseg.Op, target string, flags xseg.Flags, off uint64, req wire.Payload, data []byte, bufLen int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := volclient.Call{Op: op, Target: target, Flags: flags, Offset: off, Payload: req, BufLen: max(bufLen, len(data)), Size: uint64(bufLen)}
	if data != nil {
		k.Size = uint64(len(data))
		k.Fill = func(r *xseg.Request) { copy(r.Buffer(), data) }
	}
	var out []byte
	k.Got = func(r *xseg.Request) error { out = append([]byte(nil), r.Data()...); return nil }
	err := volclient.New(s.Client, dst).Do(ctx, k)
	return out, err
}

// Create makes a blank volume.
func (s *Stack) Create(name string, size uint64) error {
	_, err := s.Do(Vlmcd, xseg.OpClone, name, 0, 0, &wire.Clone{Size: size}, nil, 0)
	return err
}

// Clone makes a clone of a snapshot (size 0: the parent's).
func (s *Stack) Clone(parent, name string, size uint64) error {
	_, err := s.Do(Vlmcd, xseg.OpClone, name, 0, 0, &wire.Clone{Parent: parent, Size: size}, nil, 0)
	return err
}

// Snapshot takes a snapshot.
func (s *Stack) Snapshot(vol, snap string) error {
	_, err := s.Do(Vlmcd, xseg.OpSnapshot, vol, 0, 0, &wire.Snapshot{Name: snap}, nil, 0)
	return err
}

// Remove removes a volume.
func (s *Stack) Remove(name string) error {
	_, err := s.Do(Vlmcd, xseg.OpDelete, name, 0, 0, nil, nil, 0)
	return err
}

// Rename renames a volume.
func (s *Stack) Rename(old, new string) error {
	_, err := s.Do(Vlmcd, xseg.OpRename, old, 0, 0, &wire.Rename{NewName: new}, nil, 0)
	return err
}

// Resize resizes a volume.
func (s *Stack) Resize(name string, size uint64, force bool) error {
	_, err := s.Do(Vlmcd, xseg.OpTruncate, name, 0, 0, &wire.Resize{Size: size, Force: force}, nil, 0)
	return err
}

// Info returns a volume's info.
func (s *Stack) Info(name string) (wire.VolumeInfo, error) {
	var vi wire.VolumeInfo
	b, err := s.Do(Vlmcd, xseg.OpInfo, name, 0, 0, nil, nil, 4096)
	if err == nil {
		err = vi.Unmarshal(b)
	}
	return vi, err
}

// Op sends a payload-less volume op (OPEN, CLOSE, ACQUIRE, RELEASE).
func (s *Stack) Op(op xseg.Op, name string, flags xseg.Flags) error {
	_, err := s.Do(Vlmcd, op, name, flags, 0, nil, nil, 1024)
	return err
}

// Write writes data at off of a volume through vlmcd.
func (s *Stack) Write(name string, off uint64, data []byte, flags xseg.Flags) error {
	_, err := s.Do(Vlmcd, xseg.OpWrite, name, flags, off, nil, data, 0)
	return err
}

// Read reads n bytes at off of a volume through vlmcd.
func (s *Stack) Read(name string, off uint64, n int) ([]byte, error) {
	return s.Do(Vlmcd, xseg.OpRead, name, 0, off, nil, nil, n)
}

// Flush flushes a volume.
func (s *Stack) Flush(name string) error {
	_, err := s.Do(Vlmcd, xseg.OpFlush, name, 0, 0, nil, nil, 0)
	return err
}

// URI is the NBD URI of a volume on the stack's endpoint.
func (s *Stack) URI(volume string) string {
	return "nbd+unix:///" + volume + "?socket=" + s.Socket
}

// MapRead asks the mapper which objects hold [off, off+n) of a volume.
func (s *Stack) MapRead(name string, off uint64, n int) ([]wire.MapPiece, error) {
	var mr wire.MapReply
	err := volclient.New(s.Client, Mapper).Do(context.Background(), volclient.Call{Op: xseg.OpMapR, Target: name, Offset: off, Size: uint64(n), BufLen: 64 << 10,
		Got: func(r *xseg.Request) error { return mr.Unmarshal(r.Data()) }})
	return mr.Pieces, err
}
