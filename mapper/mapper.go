// Package mapper is the mapper peer (mapperd): it serves volume operations
// with a volume.Engine whose map store and data store are the blockers
// behind blockerm_port and blockerb_port, reached through the segment.
//
// # Operations (target: the volume)
//
//	MAPR, MAPW  Offset, Size -> wire.MapReply (MAPW copies on write first)
//	CLONE       wire.Clone: Parent "" creates a blank volume of Size
//	SNAPSHOT    wire.Snapshot{Name}
//	DELETE      remove the volume (refused while sessions are open here;
//	            FORCE: even then)
//	RENAME      wire.Rename{NewName}
//	TRUNCATE    wire.Resize{Size, Force}
//	INFO        -> wire.VolumeInfo
//	LIST        wire.List{Prefix, After} -> wire.Names (volumes)
//	TRIM        whole blocks of Offset, Size become zero blocks
//	ALLOCATED   Offset, Size -> wire.Extents, the ranges not zero blocks
//	OPEN, CLOSE take and release the volume's lock for this host; with a
//	            wire.Session they open and end a block endpoint's
//	            session (OPEN answers the volume's incarnation id; CLOSE
//	            with SessionGone: its client left)
//	ACQUIRE     take the lock (NOSYNC: try once); RELEASE (FORCE: break
//	            and fence the volume against the old holder)
//	FLUSH       asked by vlmcd before it acknowledges a FLUSH: confirms
//	            that this host still holds the lock of a volume it holds
//	            (ErrFenced if another host broke it; see volume.Engine.Flush)
//	PING        answered at once
//
// A request that fails because another host holds the lock carries a
// wire.LockReply naming the holder.
//
// # Sessions
//
// The block endpoints (nbdd per NBD connection, a mapped device per
// mapping) open a session of the volume they serve (volclient.Open) and
// end it when the connection ends; the engine gives a lock it took for
// writes back when the last session that may write ends (see
// volume.Engine.CloseSession). A session is keyed by the request's source
// port, the process bound to it then, and the endpoint's handle. Once a
// second the mapper drops the sessions whose process no longer owns that
// port (it died, with SIGKILL too, or was restarted), as if they had been
// closed (Close stops that, before the peer stops). Before the engine
// gives a lock back on its own it sends DRAIN to every port that MAPR/MAPW
// came from (vlmcd), which waits for the volume's writes in flight and
// forgets its cached mappings.
package mapper

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/store/xsegstore"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// Mapper is mapperd's request handler.
type Mapper struct {
	opts                       volume.Options
	blockerMPort, blockerBPort int

	once sync.Once
	e    *volume.Engine
	err  error
	p    *peer.Peer

	mu      sync.Mutex
	holders map[int]int // port -> pid that sent MAPR/MAPW (vlmcd): DRAIN goes there

	// The mapper's own work beside the requests (the reaper, the
	// recovery of interrupted operations' locks) runs under life until
	// Close; bg counts it.
	life context.Context
	end  context.CancelFunc
	bg   sync.WaitGroup

	gc gcRun // the garbage collection running here (gc.go)
}

// reapEvery is how often the sessions of dead processes are looked for
// (and the locks whose release failed given back again).
var reapEvery = time.Second

// drainTimeout bounds a DRAIN: past it the lock is given back anyway.
const drainTimeout = 30 * time.Second

var _ peer.Handler = (*Mapper)(nil)

// New returns a mapper whose maps live behind the blocker at blockerM and
// data behind the blocker at blockerB.
// Call Close before its peer stops.
func New(opts volume.Options, blockerM, blockerB int) *Mapper {
	life, end := context.WithCancel(context.Background())
	return &Mapper{opts: opts, blockerMPort: blockerM, blockerBPort: blockerB, life: life, end: end}
}

// Close stops the mapper's work of its own beside the requests — the
// reaper of dead sessions, which also gives back the locks whose release
// failed, and the retries of the recovery of interrupted operations'
// locks — and waits for it to end. Call it before the mapper's peer stops
// (mapperd does at SIGTERM): in a process that goes on after the peer (a
// host process, a test) that work would otherwise use the segment the
// peer unmapped.
func (m *Mapper) Close() {
	m.mu.Lock()
	m.end()
	m.mu.Unlock()
	m.bg.Wait()
}

// background runs f in a goroutine until Close, unless closed already.
func (m *Mapper) background(f func(ctx context.Context)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.life.Err() != nil {
		return
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f(m.life)
	}()
}

// engine builds the engine on the first request, once the peer that
// reaches the blockers exists, and starts the reaper with it: a release
// that failed must be tried again even if no session was ever opened
// here (a vlmc open/close, or a writer without a session).
func (m *Mapper) engine(p *peer.Peer) (*volume.Engine, error) {
	m.once.Do(func() {
		m.p = p
		opts := m.opts
		opts.Drain = m.drain
		opts.Logger = p.Logger() // damaged map objects
		m.e, m.err = volume.New(xsegstore.New(p, m.blockerMPort), xsegstore.New(p, m.blockerBPort), opts)
		if m.err == nil {
			// Before anything is served: locks a killed predecessor took
			// for an operation it never finished go back (Options.Intents);
			// while the maps blocker cannot answer, every second.
			if err := m.e.RecoverIntents(context.Background()); err != nil {
				p.Logger().Warn("giving back the locks of interrupted operations; will try again", "err", err)
				m.background(m.recoverIntents)
			}
			m.background(m.reaper)
		}
	})
	return m.e, m.err
}

// recoverIntents calls RecoverIntents every second until it succeeds or
// ctx ends.
func (m *Mapper) recoverIntents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if err := m.e.RecoverIntents(ctx); err == nil {
			return
		}
	}
}

// Serve implements peer.Handler: the mapper serves every request itself
// (Served). A failure because another host holds the volume's lock names
// the holder in the reply (peer.ReplyLockOwner).
func (m *Mapper) Serve(ctx context.Context, p *peer.Peer, r *xseg.Request) (peer.Result, error) {
	e, err := m.engine(p)
	if err != nil {
		return peer.Served, err
	}
	err = m.serve(ctx, e, r)
	if err != nil {
		peer.ReplyLockOwner(r, err)
		return peer.Served, fmt.Errorf("%s %q: %w", r.Op(), r.Target(), err)
	}
	return peer.Served, nil
}

func (m *Mapper) serve(ctx context.Context, e *volume.Engine, r *xseg.Request) error {
	name := r.Target()
	switch r.Op() {
	case xseg.OpPing:
		return nil
	case xseg.OpMapR, xseg.OpMapW:
		var segs []volume.Piece
		var err error
		if r.Op() == xseg.OpMapR {
			segs, err = e.MapRead(ctx, name, r.Offset(), r.Size())
		} else {
			segs, err = e.MapWrite(ctx, name, r.Offset(), r.Size())
		}
		if err != nil {
			return err
		}
		var cache uint32
		if e.Held(volume.SplitRefName(name)) {
			cache = wire.PieceCacheable
			m.holder(r.Src())
		}
		mr := wire.MapReply{Pieces: make([]wire.MapPiece, len(segs))}
		for i, s := range segs {
			ms := wire.MapPiece{Object: s.Object, Offset: s.Offset, Size: s.Size, Flags: cache}
			if s.Zero {
				ms.Flags |= wire.PieceZero
			}
			if s.ReadOnly {
				ms.Flags |= wire.PieceReadOnly
			}
			mr.Pieces[i] = ms
		}
		return peer.Reply(r, &mr)
	case xseg.OpClone:
		var c wire.Clone
		if err := c.Unmarshal(r.Data()); err != nil {
			return err
		}
		if c.Parent == "" {
			return e.Create(ctx, name, c.Size)
		}
		return e.Clone(ctx, c.Parent, name, c.Size)
	case xseg.OpSnapshot:
		var s wire.Snapshot
		if err := s.Unmarshal(r.Data()); err != nil {
			return err
		}
		return e.Snapshot(ctx, name, s.Name)
	case xseg.OpDelete:
		m.reap(ctx) // a dead process's sessions do not count
		if r.Flags()&xseg.FlagForce != 0 {
			return e.RemoveForce(ctx, name)
		}
		return e.Remove(ctx, name)
	case xseg.OpRename:
		var rn wire.Rename
		if err := rn.Unmarshal(r.Data()); err != nil {
			return err
		}
		m.reap(ctx)
		return e.Rename(ctx, name, rn.NewName)
	case xseg.OpTruncate:
		var rs wire.Resize
		if err := rs.Unmarshal(r.Data()); err != nil {
			return err
		}
		return e.Resize(ctx, name, rs.Size, rs.Force)
	case xseg.OpInfo:
		in, err := e.Info(ctx, name)
		if err != nil {
			return err
		}
		vi := wire.VolumeInfo{Size: in.Size, BlockSize: in.BlockSize, Epoch: in.Epoch, Parent: in.Parent, LockOwner: in.LockOwner}
		if in.ReadOnly {
			vi.Flags |= wire.VolReadOnly | wire.VolSnapshot
		}
		return peer.Reply(r, &vi)
	case xseg.OpList:
		var l wire.List
		if err := l.Unmarshal(r.Data()); err != nil {
			return err
		}
		var names []string
		err := e.List(ctx, func(n string) error {
			if n > l.After && len(n) >= len(l.Prefix) && n[:len(l.Prefix)] == l.Prefix {
				names = append(names, n)
			}
			return nil
		})
		if err != nil {
			return err
		}
		sort.Strings(names)
		return peer.ReplyNames(r, names)
	case xseg.OpTrim:
		return e.Trim(ctx, name, r.Offset(), r.Size())
	case xseg.OpAllocated:
		ext, err := e.Allocated(ctx, name, r.Offset(), r.Size())
		if err != nil {
			return err
		}
		pe := wire.Extents{Extents: make([]wire.Extent, len(ext))}
		for i, x := range ext {
			pe.Extents[i] = wire.Extent{Offset: x.Offset, Size: x.Size}
		}
		return peer.Reply(r, &pe)
	case xseg.OpOpen:
		if isSession(r) {
			return m.openSession(ctx, e, r)
		}
		return e.Open(ctx, name)
	case xseg.OpClose:
		if isSession(r) {
			return m.closeSession(ctx, e, r)
		}
		return e.Close(ctx, name)
	case xseg.OpAcquire:
		return e.Lock(ctx, name)
	case xseg.OpRelease:
		return e.Unlock(ctx, name, r.Flags()&xseg.FlagForce != 0)
	case xseg.OpFlush:
		return e.Flush(ctx, name)
	}
	if ok, err := m.serveDoc(ctx, e, r); ok {
		return err
	}
	return fmt.Errorf("the mapper does not serve %s: %w", r.Op(), errs.ErrNotSupported)
}

// sessionKey keys the session s announced in request r.
func (m *Mapper) sessionKey(r *xseg.Request, s *wire.Session) volume.SessionKey {
	pid, _ := m.p.Segment().Owner(r.Src())
	return volume.SessionKey{Port: r.Src(), PID: pid, Handle: s.Handle}
}

// openSession serves OPEN with a wire.Session.
func (m *Mapper) openSession(ctx context.Context, e *volume.Engine, r *xseg.Request) error {
	var s wire.Session
	if err := s.Unmarshal(r.Data()); err != nil {
		return err
	}
	key := m.sessionKey(r, &s)
	if key.PID == 0 {
		return fmt.Errorf("session of port %d, which nobody binds: %w", r.Src(), errs.ErrNoPeer)
	}
	id, err := e.OpenSession(ctx, r.Target(), key, s.Flags&wire.SessionWrite != 0)
	if err != nil {
		return err
	}
	return peer.Reply(r, &wire.Session{Handle: s.Handle, Flags: s.Flags &^ wire.SessionGone, ID: id})
}

// closeSession serves CLOSE with a wire.Session.
func (m *Mapper) closeSession(ctx context.Context, e *volume.Engine, r *xseg.Request) error {
	var s wire.Session
	if err := s.Unmarshal(r.Data()); err != nil {
		return err
	}
	key := m.sessionKey(r, &s)
	if s.Flags&wire.SessionGone != 0 {
		return e.SessionGone(ctx, r.Target(), key)
	}
	return e.CloseSession(ctx, r.Target(), key)
}

// reaper drops the sessions of dead processes, for good, and gives back
// the locks whose release failed, every reapEvery until ctx ends.
func (m *Mapper) reaper(ctx context.Context) {
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.reap(ctx)
	}
}

// reap drops the sessions whose process no longer owns the port it
// opened them from.
func (m *Mapper) reap(ctx context.Context) {
	if m.e == nil {
		return
	}
	t0 := time.Now()
	seg := m.p.Segment()
	n, err := m.e.DropSessions(ctx, func(k volume.SessionKey) bool {
		pid, alive := seg.Owner(k.Port)
		return !alive || pid != k.PID
	})
	if n > 0 {
		m.p.Logger().Info("dropped the sessions of dead processes", "sessions", n)
	}
	if err != nil {
		m.p.Logger().Error("giving a lock back after dropping sessions", "err", err)
	}
	// Locks whose release failed (a blocker restarting, say): again,
	// until they go, or other hosts' writes would wait for good.
	if err := m.e.RetryReleases(ctx); err != nil {
		m.p.Logger().Warn("giving a lock back, again", "err", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		// A round that hangs holds every later one back (a lock may
		// then outlive its writer by that long): say so.
		m.p.Logger().Warn("dropping dead sessions and giving locks back again took long", "took", d.Round(time.Millisecond))
	}
}

// holder records port as one that caches mappings (vlmcd).
func (m *Mapper) holder(port int) {
	pid, _ := m.p.Segment().Owner(port)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holders == nil {
		m.holders = map[int]int{}
	}
	m.holders[port] = pid
}

// drain sends DRAIN for volume name to every live holder and waits for
// the answers (volume.Options.Drain).
func (m *Mapper) drain(ctx context.Context, name string) {
	seg := m.p.Segment()
	m.mu.Lock()
	var ports []int
	for port, pid := range m.holders {
		if p, alive := seg.Owner(port); !alive || p != pid {
			delete(m.holders, port) // its cache died with it
			continue
		}
		ports = append(ports, port)
	}
	m.mu.Unlock()
	for _, port := range ports {
		if err := m.drainAt(ctx, port, name); err != nil {
			m.p.Logger().Warn("drain before giving a lock back", "volume", name, "port", port, "err", err)
		}
	}
}

func (m *Mapper) drainAt(ctx context.Context, port int, name string) error {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	r, err := m.p.Alloc(0)
	if err != nil {
		return err
	}
	r.SetOp(xseg.OpDrain)
	if err := r.SetTarget(name); err != nil {
		m.p.Put(r)
		return err
	}
	rep, err := m.p.Call(ctx, r, port)
	if err != nil {
		return err
	}
	defer m.p.Put(rep)
	return peer.ReplyErr(rep)
}

// isSession tells an OPEN or CLOSE of a session (a wire.Session) from
// the explicit one of a tool (no payload).
func isSession(r *xseg.Request) bool {
	k, err := wire.PeekKind(r.Data())
	return err == nil && k == wire.KindSession
}
