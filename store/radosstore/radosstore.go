//go:build ceph

package radosstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// DefaultOpTimeout is Options.OpTimeout unless set.
const DefaultOpTimeout = 30 * time.Second

var (
	_ store.Store  = (*Store)(nil)
	_ store.Locker = (*Store)(nil)
)

// Options configure Open.
type Options struct {
	// Pool is the RADOS pool; it must exist.
	Pool string
	// CephConf is the path of ceph.conf; default /etc/ceph/ceph.conf.
	CephConf string
	// CephxID is the client id without "client."; default "admin".
	CephxID string
	// Namespace is the RADOS namespace of the objects; default the
	// pool's default namespace.
	Namespace string
	// LockNamespace is the RADOS namespace of the locks; default
	// Namespace + ".locks", or "archipelago.locks" if Namespace is empty.
	// It must differ from Namespace.
	LockNamespace string
	// OpTimeout bounds every wait for a monitor or an OSD; default
	// DefaultOpTimeout.
	OpTimeout time.Duration
	// Logger receives what the store logs on its own, outside any call's
	// error: warnings when its watch of lock releases broke or an
	// announcement of a release failed (waiters then poll), and debug
	// lines. Default: slog.Default(). radosd passes its peer's logger, so
	// that its log_level applies.
	Logger *slog.Logger
}

// Store keeps objects and locks in a RADOS pool. See the package
// documentation.
type Store struct {
	conn *rados.Conn
	io   *rados.IOContext // objects, in Namespace
	lio  *rados.IOContext // locks, in LockNamespace
	comp *completions     // of ReadAsync and WriteAsync
	lw   lockWatch        // WatchLock's watch of lock releases (watch.go)
	log  *slog.Logger     // Options.Logger

	// mu guards closed; every operation runs as a member of ops, which
	// Close waits for before it frees the RADOS handles. mu is held only
	// to check closed and join ops, never across a RADOS call.
	mu     sync.RWMutex
	closed bool
	ops    sync.WaitGroup
}

// Open connects to the cluster and opens the pool.
func Open(o Options) (*Store, error) {
	if o.Pool == "" {
		return nil, fmt.Errorf("radosstore: no pool: %w", errs.ErrInvalid)
	}
	if o.CephConf == "" {
		o.CephConf = "/etc/ceph/ceph.conf"
	}
	if o.CephxID == "" {
		o.CephxID = "admin"
	}
	if o.LockNamespace == "" {
		o.LockNamespace = "archipelago.locks"
		if o.Namespace != "" {
			o.LockNamespace = o.Namespace + ".locks"
		}
	}
	if o.LockNamespace == o.Namespace {
		return nil, fmt.Errorf("radosstore: lock namespace %q is the namespace of the objects: %w", o.LockNamespace, errs.ErrInvalid)
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	conn, err := rados.NewConnWithUser(o.CephxID)
	if err != nil {
		return nil, fmt.Errorf("radosstore: client %q: %w", o.CephxID, mapErr(err))
	}
	fail := func(what string, err error) (*Store, error) {
		conn.Shutdown()
		return nil, fmt.Errorf("radosstore: %s: %w", what, mapErr(err))
	}
	if err := conn.ReadConfigFile(o.CephConf); err != nil {
		return fail("reading "+o.CephConf, err)
	}
	secs := strconv.FormatFloat(o.OpTimeout.Seconds(), 'f', -1, 64)
	for _, opt := range []string{"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"} {
		if err := conn.SetConfigOption(opt, secs); err != nil {
			return fail("setting "+opt, err)
		}
	}
	if err := conn.Connect(); err != nil {
		return fail(fmt.Sprintf("connecting as client.%s with %s", o.CephxID, o.CephConf), err)
	}
	io, err := conn.OpenIOContext(o.Pool)
	if err != nil {
		return fail(fmt.Sprintf("pool %q", o.Pool), err)
	}
	lio, err := conn.OpenIOContext(o.Pool)
	if err != nil {
		io.Destroy()
		return fail(fmt.Sprintf("pool %q", o.Pool), err)
	}
	io.SetNamespace(o.Namespace)
	lio.SetNamespace(o.LockNamespace)
	comp, err := newCompletions()
	if err != nil {
		io.Destroy()
		lio.Destroy()
		conn.Shutdown()
		return nil, err
	}
	return &Store{conn: conn, io: io, lio: lio, comp: comp, log: o.Logger}, nil
}

// enter starts an operation: it fails if ctx is done or the store closed,
// and otherwise the caller must call s.ops.Done when the operation ends.
func (s *Store) enter(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("radosstore: %s %q: %w", op, name, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("radosstore: %s %q: store closed: %w", op, name, errs.ErrShutdown)
	}
	s.ops.Add(1)
	return nil
}

// enterName checks name, then enters.
func (s *Store) enterName(ctx context.Context, op, name string) error {
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("radosstore: %s: %w", op, err)
	}
	return s.enter(ctx, op, name)
}

// Close waits for the operations in flight, then disconnects.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.lw.close()
	s.ops.Wait()
	s.comp.close()
	s.io.Destroy()
	s.lio.Destroy()
	s.conn.Shutdown()
	return nil
}

// ReadAt implements store.Store.
func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := store.ValidRange(off, len(p)); err != nil {
		return 0, fmt.Errorf("radosstore: read %q: %w", name, err)
	}
	if err := s.enterName(ctx, "read", name); err != nil {
		return 0, err
	}
	defer s.ops.Done()
	if len(p) == 0 {
		if _, err := s.io.Stat(name); err != nil {
			return 0, opErr("read", name, err)
		}
		return 0, nil
	}
	n, err := s.io.Read(name, p, uint64(off))
	if err != nil {
		return 0, opErr("read", name, err)
	}
	return n, nil
}

// WriteAt implements store.Store. RADOS acknowledges a write once it is on
// stable storage, so fua changes nothing.
func (s *Store) WriteAt(ctx context.Context, name string, p []byte, off int64, fua bool) error {
	if err := store.ValidRange(off, len(p)); err != nil {
		return fmt.Errorf("radosstore: write %q: %w", name, err)
	}
	if err := s.enterName(ctx, "write", name); err != nil {
		return err
	}
	defer s.ops.Done()
	var err error
	if len(p) == 0 {
		err = s.io.Create(name, rados.CreateIdempotent)
	} else {
		err = s.io.Write(name, p, uint64(off))
	}
	return opErr("write", name, err)
}

// Stat implements store.Store.
func (s *Store) Stat(ctx context.Context, name string) (int64, error) {
	if err := s.enterName(ctx, "stat", name); err != nil {
		return 0, err
	}
	defer s.ops.Done()
	st, err := s.io.Stat(name)
	if err != nil {
		return 0, opErr("stat", name, err)
	}
	return int64(st.Size), nil
}

// Truncate implements store.Store.
func (s *Store) Truncate(ctx context.Context, name string, size int64) error {
	if size < 0 {
		return fmt.Errorf("radosstore: truncate %q to %d: %w", name, size, errs.ErrInvalid)
	}
	if err := s.enterName(ctx, "truncate", name); err != nil {
		return err
	}
	defer s.ops.Done()
	return opErr("truncate", name, truncateExisting(s.io, name, uint64(size)))
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := s.enterName(ctx, "delete", name); err != nil {
		return err
	}
	defer s.ops.Done()
	return opErr("delete", name, s.io.Delete(name))
}

// Copy implements store.Store: it reads src whole and replaces dst with one
// atomic write_full.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	if err := store.ValidName(src); err != nil {
		return fmt.Errorf("radosstore: copy to %q: %w", dst, err)
	}
	if err := s.enterName(ctx, "copy to", dst); err != nil {
		return err
	}
	defer s.ops.Done()
	data, err := s.readWhole(src)
	if err != nil {
		return opErr("copy from", src, err)
	}
	if src == dst {
		return nil
	}
	return opErr("copy to", dst, writeFull(s.io, dst, data))
}

// readWhole reads a whole object; if it grows while being read, again.
func (s *Store) readWhole(name string) ([]byte, error) {
	for {
		st, err := s.io.Stat(name)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, st.Size+1)
		n, err := s.io.Read(name, buf, 0)
		if err != nil {
			return nil, err
		}
		if uint64(n) <= st.Size {
			return buf[:n], nil
		}
	}
}

// Sync implements store.Store. Every change is durable when acknowledged
// (see the package documentation), so there is nothing to flush.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.enter(ctx, "sync", ""); err != nil {
		return err
	}
	s.ops.Done()
	return nil
}

// List implements store.Store. RADOS lists a namespace in no order and
// cannot filter by prefix: List reads every name of Namespace.
func (s *Store) List(ctx context.Context, prefix string, fn func(name string) error) error {
	if err := s.enter(ctx, "list", prefix); err != nil {
		return err
	}
	defer s.ops.Done()
	it, err := s.io.Iter()
	if err != nil {
		return opErr("list", prefix, err)
	}
	defer it.Close()
	for it.Next() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("radosstore: list %q: %w", prefix, err)
		}
		name := it.Value()
		if !strings.HasPrefix(name, prefix) || store.ValidName(name) != nil {
			continue
		}
		if err := fn(name); err != nil {
			return err
		}
	}
	return opErr("list", prefix, it.Err())
}

// opErr wraps a RADOS error (nil stays nil) with the operation, the name
// and its sentinel.
func opErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("radosstore: %s %q: %w", op, name, mapErr(err))
}

// errno returns the negative errno of a RADOS error, 0 if it has none.
func errno(err error) int {
	var oe rados.OperationError
	if errors.As(err, &oe) {
		switch {
		case oe.OpError != nil:
			err = oe.OpError
		default:
			for _, e := range oe.StepErrors {
				err = e
				break
			}
		}
	}
	var c interface{ ErrorCode() int }
	if errors.As(err, &c) {
		return c.ErrorCode()
	}
	return 0
}

// mapErr adds the sentinel of package errs that matches a RADOS error.
func mapErr(err error) error {
	var sentinel error
	code := errno(err)
	switch syscall.Errno(-code) {
	case syscall.ENOENT:
		sentinel = errs.ErrNotFound
	case syscall.ENOSPC, syscall.EDQUOT:
		sentinel = errs.ErrNoSpace
	case syscall.EFBIG:
		sentinel = errs.ErrTooLarge
	case syscall.EINVAL, syscall.ENAMETOOLONG:
		sentinel = errs.ErrInvalid
	case syscall.EEXIST:
		sentinel = errs.ErrExists
	case syscall.ETIMEDOUT:
		return fmt.Errorf("%w: no answer from the cluster in time (%w)", errs.ErrIO, err)
	default:
		sentinel = errs.ErrIO
	}
	return fmt.Errorf("%w (%w)", sentinel, err)
}
