//go:build ceph

package radosstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// cluster returns the options of the test cluster from the environment:
// ARCHIPELAGO_CEPH_CONF (e.g. what scripts/micro-ceph.sh start prints) and
// ARCHIPELAGO_CEPH_POOL (default "archipelago"). Without a cluster the
// test is skipped, or fails in CI (CI=true), where Ceph must run.
func cluster(t testing.TB) radosstore.Options {
	t.Helper()
	conf := os.Getenv("ARCHIPELAGO_CEPH_CONF")
	if conf == "" {
		const msg = "no Ceph cluster: set ARCHIPELAGO_CEPH_CONF to its ceph.conf " +
			"(scripts/micro-ceph.sh start /tmp/ceph-dev prints one) and ARCHIPELAGO_CEPH_POOL"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI must run the RADOS tests")
		}
		t.Skip(msg)
	}
	pool := os.Getenv("ARCHIPELAGO_CEPH_POOL")
	if pool == "" {
		pool = "archipelago"
	}
	return radosstore.Options{Pool: pool, CephConf: conf, CephxID: os.Getenv("ARCHIPELAGO_CEPH_ID")}
}

// namespace returns a new RADOS namespace, whose objects and locks are
// deleted when t ends.
func namespace(t testing.TB, o radosstore.Options) string {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	ns := "test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		o := o
		o.Namespace = ns
		for _, o := range []radosstore.Options{o, {Pool: o.Pool, CephConf: o.CephConf, CephxID: o.CephxID, Namespace: ns + ".locks"}} {
			s, err := radosstore.Open(o)
			if err != nil {
				t.Errorf("cleanup: %v", err)
				return
			}
			var names []string
			err = s.List(context.Background(), "", func(name string) error { names = append(names, name); return nil })
			for _, name := range names {
				if err := s.Delete(context.Background(), name); err != nil && !errors.Is(err, errs.ErrNotFound) {
					t.Errorf("cleanup: %v", err)
				}
			}
			if err != nil {
				t.Errorf("cleanup: %v", err)
			}
			s.Close()
		}
	})
	return ns
}

// opener returns an open function for the suites: each store in a
// namespace of its own.
func opener(t *testing.T) func(t *testing.T) store.Store {
	o := cluster(t)
	return func(t *testing.T) store.Store {
		o := o
		o.Namespace = namespace(t, o)
		s, err := radosstore.Open(o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
}

func TestConformance(t *testing.T) { storetest.Run(t, opener(t)) }

func TestLocker(t *testing.T) { storetest.RunLocker(t, opener(t)) }

// TestLockAcrossClients checks that a lock belongs to its owner, not to the
// RADOS client: a new connection (a restarted peer) takes it back, another
// owner cannot, and a forced unlock from a third connection breaks it.
func TestLockAcrossClients(t *testing.T) {
	o := cluster(t)
	o.Namespace = namespace(t, o)
	ctx := t.Context()
	open := func() *radosstore.Store {
		s, err := radosstore.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a := open()
	if err := a.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatal(err)
	}
	a.Close() // host-a's peer dies

	b := open()
	var le *store.LockedError
	if err := b.TryLock(ctx, "vol", "host-b"); !errors.As(err, &le) || le.Owner != "host-a" {
		t.Fatalf("TryLock by host-b of host-a's lock = %v, want LockedError by host-a", err)
	}
	a2 := open() // host-a restarts
	if err := a2.TryLock(ctx, "vol", "host-a"); err != nil {
		t.Fatalf("host-a takes its lock back after a restart: %v", err)
	}
	if err := b.Unlock(ctx, "vol", "host-b", false); !errors.Is(err, errs.ErrNotOwner) {
		t.Fatalf("Unlock by host-b = %v, want ErrNotOwner", err)
	}
	if err := b.Unlock(ctx, "vol", "host-b", true); err != nil {
		t.Fatalf("forced Unlock by host-b: %v", err)
	}
	if _, err := a2.LockOwner(ctx, "vol"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("LockOwner after the break = %v, want ErrNotFound", err)
	}
	if err := b.TryLock(ctx, "vol", "host-b"); err != nil {
		t.Fatal(err)
	}
}

// TestOpenErrors checks the errors of a bad pool and a missing ceph.conf.
func TestOpenErrors(t *testing.T) {
	o := cluster(t)
	bad := o
	bad.Pool = "no-such-pool-archipelago"
	if _, err := radosstore.Open(bad); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("Open of a missing pool = %v, want ErrNotFound", err)
	}
	bad = o
	bad.CephConf = filepath.Join(t.TempDir(), "missing.conf")
	if _, err := radosstore.Open(bad); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("Open with a missing ceph.conf = %v, want ErrNotFound", err)
	}
	bad = o
	bad.Pool = ""
	if _, err := radosstore.Open(bad); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("Open without a pool = %v, want ErrInvalid", err)
	}
}
