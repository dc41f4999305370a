// Package volclient is the Go client library of Archipelago volumes: the
// calls a program makes to create, snapshot, clone, remove, rename,
// resize, lock and list volumes and to read and write them, without
// knowing the wire.
//
// A Client talks to the vlmcd of one installation through its XSEG
// segment: Dial joins the segment as a client (Disconnect leaves it), New
// uses a segment port the program has already. Every call takes a context
// and fails with an error that names the volume and wraps one of the errs
// sentinels (errs.ErrNotFound, errs.ErrExists, errs.ErrLocked,
// errs.ErrInvalid, errs.ErrTooLarge, errs.ErrBusy, ...): test it with
// errors.Is. A lock another host holds reads "locked by <owner>".
//
// The management calls (Create, Clone, Snapshot, Remove, Rename, Resize,
// Open, Close, Lock, Unlock, Info, List) go to vlmcd, which passes them to
// the mapper. I/O goes through a session: OpenSession returns a *Volume
// with ReadAt, WriteAt, Flush, Trim and Allocated, until Volume.Close. Do
// sends one raw request, for what the typed calls do not cover.
package volclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// MaxIO is the largest READ or WRITE one request carries; larger calls are
// split.
const MaxIO = 4 << 20

// Caller submits requests through the segment: a *peer.Client (tools) or
// a *peer.Peer (the block endpoint, which binds ports of its own).
type Caller interface {
	Alloc(n int) (*xseg.Request, error)
	Call(ctx context.Context, r *xseg.Request, dst int) (*xseg.Request, error)
	Put(r *xseg.Request)
}

// Client sends volume requests to the vlmcd at one port.
type Client struct {
	pc    Caller
	vlmcd int
	own   *peer.Client // the segment client Dial made, nil from New

	mu   sync.Mutex // guards lent
	lent map[uintptr]*xseg.Request
}

// New returns a client of the vlmcd at port vlmcd, through pc.
func New(pc Caller, vlmcd int) *Client {
	return &Client{pc: pc, vlmcd: vlmcd, lent: map[uintptr]*xseg.Request{}}
}

// Call is one request. Fill prepares it (op, target and flags are set
// already); Got reads a successful reply before the request goes back to
// the pool.
type Call struct {
	Op      xseg.Op
	Target  string
	Flags   xseg.Flags
	Offset  uint64
	Size    uint64       // for READ/WRITE; else the payload's length
	Payload wire.Payload // encoded into the buffer, if set
	BufLen  int          // buffer size (at least the payload's)
	Fill    func(r *xseg.Request)
	Got     func(r *xseg.Request) error
}

// Do sends a call to vlmcd and waits for the answer. Errors name the
// target; a lock held by another host reads "locked by <owner>".
func (c *Client) Do(ctx context.Context, k Call) error {
	n := k.BufLen
	if k.Payload != nil {
		n = max(n, k.Payload.EncodedSize())
	}
	r, err := c.pc.Alloc(n)
	if err != nil {
		return err
	}
	return c.do(ctx, r, k, true)
}

// do sends r (filled per k) and, if put, releases it after.
func (c *Client) do(ctx context.Context, r *xseg.Request, k Call, put bool) error {
	r.SetOp(k.Op)
	r.SetFlags(k.Flags)
	r.SetOffset(k.Offset)
	r.SetSize(k.Size)
	if err := r.SetTarget(k.Target); err != nil {
		if put {
			c.pc.Put(r)
		}
		return fmt.Errorf("volume %.40q: name too long: %w", k.Target, errs.ErrInvalid)
	}
	if k.Payload != nil {
		m, err := k.Payload.MarshalTo(r.Buffer())
		if err != nil {
			if put {
				c.pc.Put(r)
			}
			return fmt.Errorf("volume %q: %w", k.Target, err)
		}
		r.SetSize(uint64(m))
	}
	if k.Fill != nil {
		k.Fill(r)
	}
	if !put {
		// A lent request goes back to its lender only after its reply
		// came: never abandon it.
		ctx = context.WithoutCancel(ctx)
	}
	rep, err := c.pc.Call(ctx, r, c.vlmcd)
	if err != nil {
		if !put { // the client is closing: the request is lost with it
			c.forget(r)
		}
		if k.Target == "" { // PING, LIST: about no volume
			return fmt.Errorf("%s: %w", k.Op, err)
		}
		return fmt.Errorf("volume %q: %w", k.Target, err)
	}
	if put {
		defer c.pc.Put(rep)
	}
	if err := replyError(k.Target, rep); err != nil {
		return err
	}
	if k.Got != nil {
		return k.Got(rep)
	}
	return nil
}

// replyError is the error a reply carries, naming target; nil for a
// success.
func replyError(target string, rep *xseg.Request) error {
	err := rep.Err()
	if err == nil {
		return nil
	}
	if owner := peer.LockOwnerOf(rep); owner != "" {
		return fmt.Errorf("volume %q: locked by %s: %w", target, owner, err)
	}
	var re *peer.RemoteError
	if err := peer.ReplyErr(rep); errors.As(err, &re) {
		// The server's message names the volume already.
		return err
	}
	return fmt.Errorf("volume %q: %w", target, err)
}

// Volume is an open volume: its name, size and kind, for I/O.
type Volume struct {
	c        *Client
	Name     string
	Size     uint64
	ReadOnly bool
	// ID is the incarnation of the volume opened (the header's random
	// id): I/O names the volume as Name/ID, and fails once the volume
	// called Name is another one (removed and created again).
	ID string
	// BlockSize is the volume's block size: the unit of copy-on-write and
	// of Allocated's answer.
	BlockSize uint32

	target string // Name/ID
	handle uint64
	gone   sync.Once
	closed atomic.Bool // Close was called: I/O is refused
}

// handles numbers the sessions of this process.
var handles atomic.Uint64

// OpenSession opens a session of a volume for I/O: the mapper counts it as a
// user of the volume on this host (and, unless the volume is a snapshot,
// as one that may write: the lock a write takes is given back when the
// last of them closes), until Close or until this process dies.
func (c *Client) OpenSession(ctx context.Context, name string) (*Volume, error) {
	h := handles.Add(1)
	var s wire.Session
	err := c.Do(ctx, Call{Op: xseg.OpOpen, Target: name, Payload: &wire.Session{Handle: h, Flags: wire.SessionWrite},
		BufLen: 512, Got: func(r *xseg.Request) error { return s.Unmarshal(r.Data()) }})
	if err != nil {
		return nil, err
	}
	v := &Volume{c: c, Name: name, ID: s.ID, target: name + "/" + s.ID, handle: h}
	vi, err := c.Info(ctx, v.target)
	if err != nil {
		v.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	v.Size, v.ReadOnly, v.BlockSize = vi.Size, vi.ReadOnly, vi.BlockSize
	return v, nil
}

// Close ends the volume's session; I/O through v fails from then on (with
// errs.ErrInvalid). While no peer takes the CLOSE (vlmcd or mapperd
// restarting) it is sent again, until ctx ends: a session left open keeps
// the volume's lock on this host, and other hosts' writes wait for it. (A
// CLOSE sent twice is harmless: the mapper ignores a session it does not
// know.)
func (v *Volume) Close(ctx context.Context) error {
	v.closed.Store(true)
	delay := 10 * time.Millisecond
	for {
		err := v.c.Do(ctx, Call{Op: xseg.OpClose, Target: v.Name, Payload: &wire.Session{Handle: v.handle}})
		if err == nil || !errs.PeerGone(err) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// Gone tells the mapper, once, that the session's client left while its
// requests may still run: writes waiting for another host's lock are
// cancelled if no other session of the volume is left here. Close must
// still follow when the requests are done.
func (v *Volume) Gone(ctx context.Context) {
	v.gone.Do(func() {
		_ = v.c.Do(ctx, Call{Op: xseg.OpClose, Target: v.Name, Payload: &wire.Session{Handle: v.handle, Flags: wire.SessionGone}})
	})
}

// usable fails once v is closed: a write would take the volume's lock
// again, and no session would give it back.
func (v *Volume) usable() error {
	if v.closed.Load() {
		return fmt.Errorf("volume %q: session closed: %w", v.Name, errs.ErrInvalid)
	}
	return nil
}

// check fails if v is closed or [off, off+n) is not within the volume.
func (v *Volume) check(off, n uint64) error {
	if err := v.usable(); err != nil {
		return err
	}
	if off+n > v.Size || off+n < off {
		return fmt.Errorf("volume %q: range [%d,+%d) beyond its %d bytes: %w", v.Name, off, n, v.Size, errs.ErrInvalid)
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off uint64) error {
	if err := v.check(off, uint64(len(p))); err != nil {
		return err
	}
	if r := v.c.lender(p); r != nil { // p is a segment buffer: no copy
		return v.c.do(ctx, r, Call{Op: xseg.OpRead, Target: v.target, Offset: off, Size: uint64(len(p))}, false)
	}
	for done := 0; done < len(p); {
		n := min(len(p)-done, MaxIO)
		err := v.c.Do(ctx, Call{Op: xseg.OpRead, Target: v.target, Offset: off + uint64(done), Size: uint64(n), BufLen: n,
			Got: func(r *xseg.Request) error { copy(p[done:done+n], r.Data()); return nil }})
		if err != nil {
			return err
		}
		done += n
	}
	return nil
}

// WriteAt writes p at off; with fua it is durable when WriteAt returns.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error {
	if err := v.check(off, uint64(len(p))); err != nil {
		return err
	}
	var fl xseg.Flags
	if fua {
		fl = xseg.FlagFUA
	}
	if r := v.c.lender(p); r != nil {
		return v.c.do(ctx, r, Call{Op: xseg.OpWrite, Target: v.target, Flags: fl, Offset: off, Size: uint64(len(p))}, false)
	}
	for done := 0; done < len(p); {
		n := min(len(p)-done, MaxIO)
		err := v.c.Do(ctx, Call{Op: xseg.OpWrite, Target: v.target, Flags: fl, Offset: off + uint64(done), Size: uint64(n), BufLen: n,
			Fill: func(r *xseg.Request) { copy(r.Buffer(), p[done:done+n]) }})
		if err != nil {
			return err
		}
		done += n
	}
	return nil
}

// Flush makes every write answered so far durable.
func (v *Volume) Flush(ctx context.Context) error {
	if err := v.usable(); err != nil {
		return err
	}
	return v.c.Do(ctx, Call{Op: xseg.OpFlush, Target: v.target})
}

// Trim makes the whole blocks of [off, off+n) zero blocks.
func (v *Volume) Trim(ctx context.Context, off, n uint64) error {
	if err := v.check(off, n); err != nil {
		return err
	}
	return v.c.Do(ctx, Call{Op: xseg.OpTrim, Target: v.target, Offset: off, Size: n})
}

// Extent is a range of a volume, in bytes.
type Extent struct{ Offset, Size uint64 }

// Allocated returns the allocated ranges of [off, off+n), in order: the
// rest reads as zeros.
func (v *Volume) Allocated(ctx context.Context, off, n uint64) ([]Extent, error) {
	if err := v.usable(); err != nil {
		return nil, err
	}
	var out wire.Extents
	// One extent per block at worst; ask for a range a reply can describe.
	err := v.c.Do(ctx, Call{Op: xseg.OpAllocated, Target: v.target, Offset: off, Size: n, BufLen: 256 << 10,
		Got: func(r *xseg.Request) error { return out.Unmarshal(r.Data()) }})
	if err != nil {
		return nil, err
	}
	ext := make([]Extent, len(out.Extents))
	for i, x := range out.Extents {
		ext[i] = Extent{Offset: x.Offset, Size: x.Size}
	}
	return ext, nil
}

// Lend returns a request whose buffer holds n bytes, for a caller that
// wants to fill or read it in place and then pass its bytes to ReadAt or
// WriteAt (which then send that very request: no copy). Return it with
// Unlend.
func (c *Client) Lend(n int) ([]byte, error) {
	r, err := c.pc.Alloc(n)
	if err != nil {
		return nil, err
	}
	b := r.Buffer()[:n]
	c.mu.Lock()
	c.lent[uintptr(unsafe.Pointer(unsafe.SliceData(b)))] = r
	c.mu.Unlock()
	return b, nil
}

// Unlend gives back a buffer from Lend.
func (c *Client) Unlend(b []byte) {
	k := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	c.mu.Lock()
	r := c.lent[k]
	delete(c.lent, k)
	c.mu.Unlock()
	if r != nil {
		c.pc.Put(r)
	}
}

// forget drops a lent request that can no longer be given back.
func (c *Client) forget(r *xseg.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, x := range c.lent {
		if x.Index() == r.Index() {
			delete(c.lent, k)
		}
	}
}

// lender returns the request behind a lent buffer whose bytes are exactly
// p, nil if p is not such a buffer.
func (c *Client) lender(p []byte) *xseg.Request {
	if len(p) == 0 {
		return nil
	}
	c.mu.Lock()
	r := c.lent[uintptr(unsafe.Pointer(unsafe.SliceData(p)))]
	c.mu.Unlock()
	if r == nil || uint64(len(p)) > uint64(len(r.Buffer())) {
		return nil
	}
	return r
}

// Dial joins the segment called segment (under /dev/shm) as a client and
// returns a Client of the vlmcd at port vlmcd, failing with errs.ErrNoPeer
// if no live process binds that port. Disconnect releases the segment
// port when done.
func Dial(segment string, vlmcd int) (*Client, error) {
	pc, err := peer.Dial(segment)
	if err != nil {
		return nil, err
	}
	if _, alive := pc.Segment().Owner(vlmcd); !alive {
		pc.Close()
		return nil, fmt.Errorf("vlmcd (port %d of segment %q) is not running: start it with `archipelago start`: %w", vlmcd, segment, errs.ErrNoPeer)
	}
	c := New(pc, vlmcd)
	c.own = pc
	return c, nil
}

// Disconnect releases the segment port of a Client from Dial. Close the
// volumes opened through it first. It does nothing for a Client from New.
func (c *Client) Disconnect() {
	if c.own != nil {
		c.own.Close()
	}
}
