//go:build ceph

package blocker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// ownerAskingRados is a radosstore.Store that counts LockOwner calls.
type ownerAskingRados struct {
	*radosstore.Store
	asks atomic.Int32
}

func (s *ownerAskingRados) LockOwner(ctx context.Context, name string) (string, error) {
	s.asks.Add(1)
	return s.Store.LockOwner(ctx, name)
}

// TestLockWaitWokenAcrossHosts checks that a LOCKWAIT served by a blocker
// over RADOS is answered when another RADOS client (another host) releases
// the lock, not at its next poll or LockWaitMax, a minute away, and that
// it leaves the lock free.
func TestLockWaitWokenAcrossHosts(t *testing.T) {
	open := radosOpener(t)
	here := &ownerAskingRados{Store: open()} // the blocker's host
	there := open()                          // another host
	ctx := t.Context()
	var r [8]byte
	rand.Read(r[:])
	vol := "vol-" + hex.EncodeToString(r[:])
	t.Cleanup(func() { there.Unlock(context.Background(), vol, "there", false) })

	ip := startInProcess(t, memstore.New())
	slowBlocker(ip, here)
	if err := there.TryLock(ctx, vol, "there"); err != nil {
		t.Fatal(err)
	}
	answer := lockWait(ip.filed, vol, "")
	// It asked, subscribed and asked again: from now on only a wake-up,
	// or the poll a minute away, can answer it.
	until(t, "subscribed and asked twice", func() bool { return here.asks.Load() >= 2 })
	select {
	case rep := <-answer:
		t.Fatalf("LOCKWAIT of a held lock answered %v without waiting", rep.err)
	default:
	}
	if err := there.Unlock(ctx, vol, "there", false); err != nil {
		t.Fatal(err)
	}
	if rep := answered(t, answer, "an Unlock by another host"); rep.err != nil {
		t.Fatalf("LOCKWAIT after the release: %v", rep.err)
	}
	if owner, err := there.LockOwner(ctx, vol); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("lock held by %q (%v) after LOCKWAIT, want free", owner, err)
	}
}
