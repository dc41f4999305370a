//go:build ceph

package blocker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/blocker"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// cephWatchNamespace is the RADOS namespace of TestAcquireWokenAcrossHosts.
// The test removes its locks, but the namespace's release object stays
// (only radosstore's own tests can remove it): one fixed namespace keeps
// that to one object.
const cephWatchNamespace = "archipelago-test-blocker-watch"

// countingRados is a radosstore.Store that counts TryLocks.
type countingRados struct {
	*radosstore.Store
	tries atomic.Int32
}

func (s *countingRados) TryLock(ctx context.Context, name, owner string) error {
	s.tries.Add(1)
	return s.Store.TryLock(ctx, name, owner)
}

// TestAcquireWokenAcrossHosts checks that a waiting ACQUIRE of a blocker
// over RADOS is answered when another RADOS client (another host) releases
// the lock, plainly or by force, and not at its next poll, a minute away.
func TestAcquireWokenAcrossHosts(t *testing.T) {
	open := radosOpener(t)
	here := &countingRados{Store: open()} // the blocker's host
	there := open()                       // another host
	ctx := t.Context()
	var r [8]byte
	rand.Read(r[:])
	vol := "vol-" + hex.EncodeToString(r[:])
	t.Cleanup(func() {
		for _, owner := range []string{"there", "B", "C"} {
			there.Unlock(context.Background(), vol, owner, false)
		}
	})

	ip := startInProcess(t, memstore.New())
	b := blocker.New(here, "test-ident")
	b.LockPoll, b.LockPollMax = time.Minute, time.Minute
	ip.h.b.Store(b)

	for _, c := range []struct {
		waiter string
		force  bool
	}{{"B", false}, {"C", true}} {
		holder := "there"
		if err := there.TryLock(ctx, vol, holder); err != nil {
			t.Fatal(err)
		}
		tries := here.tries.Load()
		answer := waitingAcquire(ip.filed, vol, c.waiter)
		// The ACQUIRE tried, subscribed and tried again: from now on
		// only a wake-up, or the poll a minute away, can answer it.
		until(t, "subscribed and tried twice", func() bool { return here.tries.Load() >= tries+2 })
		select {
		case rep := <-answer:
			t.Fatalf("ACQUIRE of a held lock answered %v without waiting", rep.err)
		default:
		}
		by := "an Unlock by another host"
		unlocker := holder
		if c.force {
			by, unlocker = "a forced Unlock by another host", "breaker"
		}
		if err := there.Unlock(ctx, vol, unlocker, c.force); err != nil {
			t.Fatal(err)
		}
		granted(t, answer, by)
		if owner, err := there.LockOwner(ctx, vol); err != nil || owner != c.waiter {
			t.Fatalf("after the wait the lock is held by %q (%v), want %s", owner, err, c.waiter)
		}
		if err := there.Unlock(ctx, vol, c.waiter, false); err != nil {
			t.Fatal(err)
		}
	}
}

// radosOpener returns a function that opens a new RADOS client (another
// host, each time) on the test cluster's pool, in cephWatchNamespace,
// closed when t ends. Without a cluster the test is skipped, or fails in
// CI (CI=true), where Ceph must run.
func radosOpener(t *testing.T) func() *radosstore.Store {
	t.Helper()
	conf := os.Getenv("ARCHIPELAGO_CEPH_CONF")
	if conf == "" {
		const msg = "no Ceph cluster: set ARCHIPELAGO_CEPH_CONF (scripts/micro-ceph.sh start DIR prints one)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI must run the RADOS tests")
		}
		t.Skip(msg)
	}
	o := radosstore.Options{Pool: os.Getenv("ARCHIPELAGO_CEPH_POOL"), CephConf: conf,
		CephxID: os.Getenv("ARCHIPELAGO_CEPH_ID"), Namespace: cephWatchNamespace}
	if o.Pool == "" {
		o.Pool = "archipelago"
	}
	return func() *radosstore.Store {
		s, err := radosstore.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}
