package mapdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/xseg"
)

// RemoteOptions say which volume a Remote serves, and through what.
type RemoteOptions struct {
	Segment   string // segment name
	VlmcdPort int    // port of vlmcd
	Volume    string // volume or snapshot name
	// Grace is how long I/O waits for the peers to come back (a restart)
	// before failing with EIO; default 2 minutes.
	Grace time.Duration
	// Logger gets outages and reconnections (with no attribute naming
	// the volume: add it with Logger.With if needed); nil discards them.
	Logger *slog.Logger
	// Client are the options of the segment client (zero: the defaults).
	Client peer.ClientOptions
}

// Remote is a Device over a volume that vlmcd serves through the
// segment. It outlives restarts of the peers: a request that finds no
// peer (or a dead one) is retried for a grace period, and when the
// segment itself is replaced (archipelago stop -f, then start) Remote
// joins the new one and carries on. Requests on the old segment are
// abandoned only then, when no peer of it can still act on them.
type Remote struct {
	o         RemoteOptions
	log       *slog.Logger
	size      atomic.Uint64 // grows with the volume (Grow)
	shrunk    uint64        // the last smaller size Grow warned about (Grow's caller only)
	readOnly  bool
	blockSize uint64

	mu  sync.Mutex // guards cur; held while dialling, so one dial at a time
	cur *conn

	outage atomic.Bool // an outage is being logged
	stop   chan struct{}
	wg     sync.WaitGroup
}

var (
	_ Device = (*Remote)(nil)
	_ Zeroer = (*Remote)(nil)
)

// conn is one membership of the segment, with one session of the
// volume. When the volume grows, Grow replaces it by a conn with a new
// session (of the new size) on the same membership, and the old session
// is closed once the requests running on it are done.
type conn struct {
	pc  *peer.Client
	vc  *volclient.Client
	vol *volclient.Volume
	seg fileID // the segment file when joined
	m   *member

	users   int  // requests running on vol (under Remote.mu)
	retired bool // replaced by Grow: vol is closed when users drops to 0 (under Remote.mu)
}

// member is one membership of the segment: its mapping, its client
// port and the segment buffers lent out of it (Remote.lend). The mapping
// outlives the port: when the segment is replaced (drop) the port closes
// at once, failing the requests waiting on it, but the memory stays
// mapped until the last request running on it and the last buffer lent
// out of it are done, so that no reader of /dev/fuse, no copy and no
// retry ever touches memory unmapped under it.
type member struct {
	pc  *peer.Client
	vc  *volclient.Client
	seg *xseg.Segment

	mu   sync.Mutex
	refs int  // requests running and buffers lent out
	left bool // the port is closed: buffers are no longer given back
}

// hold counts one more user of m's memory; false once m has left.
func (m *member) hold() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.left {
		return false
	}
	m.refs++
	return true
}

// release ends a use counted by hold (or by the lending of b, if not
// nil, which goes back to the port unless m has left).
func (m *member) release(b []byte) {
	m.mu.Lock()
	if b != nil && !m.left {
		m.vc.Unlend(b)
	}
	m.refs--
	last := m.left && m.refs == 0
	m.mu.Unlock()
	if last {
		m.seg.Close()
	}
}

// leave closes m's port (its waiting requests fail) and unmaps the
// segment once nothing uses its memory.
func (m *member) leave() error {
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		return nil
	}
	m.left = true
	err := m.pc.Close()
	last := m.refs == 0
	m.mu.Unlock()
	if last {
		m.seg.Close()
	}
	return err
}

type fileID struct{ dev, ino uint64 }

func segmentID(name string) (fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(xseg.ShmDir, name), &st); err != nil {
		return fileID{}, err
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// transient marks a failure to reach the peers, worth retrying.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

func retryable(err error) bool {
	var t transient
	return errors.As(err, &t) || errs.PeerGone(err)
}

// DialRemote joins the segment and opens the volume: a session of it
// (volclient.Client.OpenSession) until Close, or until this process ends.
// Its errors name the volume (no such volume) or the segment (not
// running).
func DialRemote(ctx context.Context, o RemoteOptions) (*Remote, error) {
	if o.Grace <= 0 {
		o.Grace = 2 * time.Minute
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	r := &Remote{o: o, log: lg, stop: make(chan struct{})}
	c, err := r.dial(ctx)
	if err != nil {
		return nil, err
	}
	vi, err := c.vc.Info(ctx, o.Volume)
	if err != nil {
		c.vol.Close(context.WithoutCancel(ctx))
		c.m.leave()
		return nil, err
	}
	r.cur, r.readOnly, r.blockSize = c, c.vol.ReadOnly, uint64(max(vi.BlockSize, 512))
	r.size.Store(c.vol.Size)
	r.wg.Add(1)
	go r.watch()
	return r, nil
}

func (r *Remote) dial(ctx context.Context) (*conn, error) {
	id, err := segmentID(r.o.Segment)
	if err != nil {
		return nil, transient{fmt.Errorf("segment %q: %w: start it with `archipelago start`", r.o.Segment, errs.ErrNotFound)}
	}
	// The segment joined apart from the port: its mapping is the
	// member's to end (leave), not the port's.
	seg, err := xseg.Join(r.o.Segment)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			err = fmt.Errorf("%w: start it with `archipelago start`", err)
		}
		return nil, transient{err}
	}
	pc, err := peer.NewClientWith(seg, r.o.Client)
	if err != nil {
		seg.Close()
		return nil, transient{err}
	}
	m := &member{pc: pc, seg: seg}
	if _, alive := seg.Owner(r.o.VlmcdPort); !alive {
		m.leave()
		return nil, transient{fmt.Errorf("vlmcd (port %d of segment %q) is not running: start it with `archipelago start`: %w", r.o.VlmcdPort, r.o.Segment, errs.ErrNoPeer)}
	}
	m.vc = volclient.New(pc, r.o.VlmcdPort)
	v, err := m.vc.OpenSession(ctx, r.o.Volume)
	if err != nil {
		m.leave()
		return nil, err
	}
	return &conn{pc: pc, vc: m.vc, vol: v, seg: id, m: m}, nil
}

// conn returns the current connection, dialling if there is none, and
// counts the caller as one of its users until release.
func (r *Remote) conn(ctx context.Context) (*conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil && r.cur.m.hold() {
		r.cur.users++
		return r.cur, nil
	}
	c, err := r.dial(ctx)
	if err != nil {
		return nil, err
	}
	if size := r.size.Load(); c.vol.Size < size || c.vol.ReadOnly != r.readOnly {
		r.log.Warn("the volume changed under the mapping", "size", c.vol.Size, "mapped_size", size, "readonly", c.vol.ReadOnly)
	}
	r.log.Info("joined the segment again", "segment", r.o.Segment, "port", c.pc.Port())
	r.cur = c
	c.m.hold()
	c.users++
	return c, nil
}

// release ends a use of c that conn counted; the last use of a retired
// session closes it.
func (r *Remote) release(c *conn) {
	r.mu.Lock()
	c.users--
	if c.retired && c.users == 0 {
		c.retired = false
		r.closeSession(c.vol)
	}
	r.mu.Unlock()
	c.m.release(nil)
}

// closeSession closes a session that Grow replaced, in the background.
func (r *Remote) closeSession(v *volclient.Volume) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := v.Close(ctx); err != nil {
			r.log.Warn("closing the session of the volume's old size", "err", err)
		}
	}()
}

// Grow takes the volume's size anew and reports whether it grew. Once it
// has, Size is the new size and I/O up to it works (the caller then tells
// the kernel: Server.Resized, SetCapacity). A volume that shrank (vlmc
// resize --force elsewhere) is not followed: the mapping keeps its size,
// I/O past the volume's end fails, and Grow logs a warning (once per
// size). A read-only volume (a snapshot) never grows. Grow may run
// concurrently with I/O, but not with itself.
func (r *Remote) Grow(ctx context.Context) (bool, error) {
	if r.readOnly {
		return false, nil
	}
	c, err := r.conn(ctx)
	if err != nil {
		return false, err
	}
	defer r.release(c)
	// This incarnation's size: a volume removed and created again under
	// the same name is another volume, and the mapping does not follow.
	vi, err := c.vc.Info(ctx, c.vol.Name+"/"+c.vol.ID)
	if err != nil {
		return false, err
	}
	old := r.size.Load()
	switch {
	case vi.Size < old:
		if r.shrunk != vi.Size {
			r.shrunk = vi.Size
			r.log.Warn("the volume shrank under the mapping: the device keeps its size, I/O past the volume's end fails; unmap it", "size", vi.Size, "mapped_size", old)
		}
		return false, nil
	case vi.Size == old:
		return false, nil
	}
	if c.vol.Size >= vi.Size { // a session opened since (a new segment) knows the size
		r.size.Store(c.vol.Size)
		return true, nil
	}
	nv, err := c.vc.OpenSession(ctx, r.o.Volume)
	if err != nil {
		return false, err
	}
	if nv.ID != c.vol.ID || nv.Size <= old {
		nv.Close(context.WithoutCancel(ctx))
		if nv.ID != c.vol.ID {
			return false, fmt.Errorf("volume %q: another volume of that name (id %s) replaced the mapped one (id %s): the mapping does not follow: %w",
				r.o.Volume, nv.ID, c.vol.ID, errs.ErrNotFound)
		}
		return false, nil
	}
	r.mu.Lock()
	if r.cur != c { // the segment was replaced meanwhile: its new session knows the size
		r.mu.Unlock()
		nv.Close(context.WithoutCancel(ctx))
		return false, nil
	}
	r.cur = &conn{pc: c.pc, vc: c.vc, vol: nv, seg: c.seg, m: c.m}
	c.retired = true // closed by the release of its last user (at the latest ours)
	// After the swap: a request that sees the new size gets the new session.
	r.size.Store(nv.Size)
	r.mu.Unlock()
	return true, nil
}

// drop forgets c if the segment file is no longer the one c joined: its
// peers are gone for good, so the requests waiting on it are abandoned
// (they fail with ErrShutdown and are retried on the new segment).
func (r *Remote) drop(c *conn) {
	id, err := segmentID(r.o.Segment)
	if err == nil && id == c.seg {
		return // the same segment: its peers come back (or recovery answers)
	}
	r.mu.Lock()
	if r.cur != c {
		r.mu.Unlock()
		return
	}
	r.cur = nil
	r.mu.Unlock()
	r.log.Warn("the segment was replaced: leaving the old one", "segment", r.o.Segment)
	c.m.leave()
}

// watch notices a replaced segment even when every request is stuck on
// the old one.
func (r *Remote) watch() {
	defer r.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		c := r.cur
		r.mu.Unlock()
		if c != nil {
			r.drop(c)
		}
	}
}

// do runs fn on the current connection, retrying while the peers are
// unreachable, up to the grace period.
func (r *Remote) do(ctx context.Context, fn func(v *volclient.Volume) error) error {
	var deadline time.Time
	backoff := 10 * time.Millisecond
	for {
		c, err := r.conn(ctx)
		if err == nil {
			err = fn(c.vol)
			r.release(c)
			if err == nil {
				if !deadline.IsZero() && r.outage.CompareAndSwap(true, false) {
					r.log.Info("the peers answer again")
				}
				return nil
			}
		}
		if !retryable(err) || ctx.Err() != nil {
			return err
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(r.o.Grace)
			if r.outage.CompareAndSwap(false, true) {
				r.log.Warn("the peers do not answer: waiting for them", "grace", r.o.Grace, "err", err)
			}
		}
		if now.After(deadline) {
			return fmt.Errorf("volume %q: no answer within %v: %w", r.o.Volume, r.o.Grace, err)
		}
		if c != nil {
			r.drop(c)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.stop:
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Size implements Device.
func (r *Remote) Size() uint64 { return r.size.Load() }

// ReadOnly implements Device.
func (r *Remote) ReadOnly() bool { return r.readOnly }

// BlockSize is the volume's block (data object) size.
func (r *Remote) BlockSize() uint64 { return r.blockSize }

// ReadAt implements Device.
func (r *Remote) ReadAt(ctx context.Context, p []byte, off uint64) error {
	return r.do(ctx, func(v *volclient.Volume) error { return v.ReadAt(ctx, p, off) })
}

// WriteAt implements Device.
func (r *Remote) WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error {
	if r.readOnly {
		return fmt.Errorf("volume %q: %w", r.o.Volume, errs.ErrReadOnly)
	}
	return r.do(ctx, func(v *volclient.Volume) error { return v.WriteAt(ctx, p, off, fua) })
}

// Flush implements Device.
func (r *Remote) Flush(ctx context.Context) error {
	return r.do(ctx, func(v *volclient.Volume) error { return v.Flush(ctx) })
}

// zeros is what partial blocks are zeroed with; never written to.
var zeros = make([]byte, 1<<20)

// maxTrim bounds one TRIM request.
const maxTrim = 1 << 30

// Zero implements Zeroer: the whole blocks of the range are trimmed
// (freed), the partial ones at its ends written with zeros unless they
// are unallocated already.
func (r *Remote) Zero(ctx context.Context, off, n uint64) error {
	if r.readOnly {
		return fmt.Errorf("volume %q: %w", r.o.Volume, errs.ErrReadOnly)
	}
	end := off + n
	bs := r.blockSize
	first := (off + bs - 1) / bs * bs
	last := end / bs * bs
	if first >= last { // no whole block
		return r.zeroPart(ctx, off, end)
	}
	if err := r.zeroPart(ctx, off, first); err != nil {
		return err
	}
	for at := first; at < last; {
		k := min(last-at, maxTrim)
		if err := r.do(ctx, func(v *volclient.Volume) error { return v.Trim(ctx, at, k) }); err != nil {
			return err
		}
		at += k
	}
	return r.zeroPart(ctx, last, end)
}

// zeroPart writes zeros over [off, end) where anything is allocated.
func (r *Remote) zeroPart(ctx context.Context, off, end uint64) error {
	if off >= end {
		return nil
	}
	var alloc bool
	err := r.do(ctx, func(v *volclient.Volume) error {
		ext, err := v.Allocated(ctx, off, end-off)
		alloc = len(ext) > 0
		return err
	})
	if err != nil {
		return err
	}
	if !alloc {
		return nil // a hole reads as zeros already
	}
	for at := off; at < end; {
		k := min(end-at, uint64(len(zeros)))
		if err := r.WriteAt(ctx, zeros[:k], at, false); err != nil {
			return err
		}
		at += k
	}
	return nil
}

// Close leaves the segment. Requests still running fail.
func (r *Remote) Close() error {
	close(r.stop)
	r.wg.Wait()
	r.mu.Lock()
	c := r.cur
	r.cur = nil
	r.mu.Unlock()
	if c != nil {
		// The mapping's session ends (the mapper gives a lock its writes
		// took back); if that fails, it ends when this process does.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.vol.Close(ctx); err != nil {
			r.log.Warn("closing the volume's session", "err", err)
		}
		return c.m.leave()
	}
	return nil
}

// lend implements lender: a segment buffer of n bytes from the current
// membership, which stays mapped until unlend; nil when there is no
// membership now or the segment has no room (the caller then uses its
// own memory, and ReadAt and WriteAt copy).
func (r *Remote) lend(n int) ([]byte, any) {
	r.mu.Lock()
	c := r.cur
	r.mu.Unlock()
	if c == nil || !c.m.hold() {
		return nil, nil
	}
	b, err := c.m.vc.Lend(n)
	if err != nil {
		c.m.release(nil)
		return nil, nil
	}
	return b, c.m
}

// unlend implements lender.
func (r *Remote) unlend(b []byte, tag any) { tag.(*member).release(b) }

// alive implements lender: a buffer of a membership that has left is
// still mapped, but no longer worth keeping.
func (r *Remote) alive(tag any) bool {
	m := tag.(*member)
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.left
}
