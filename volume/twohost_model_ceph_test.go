//go:build ceph

package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/radosstore"
)

// radosShared is a namespace of the test cluster's pool shared by the
// hosts (ARCHIPELAGO_CEPH_CONF, ARCHIPELAGO_CEPH_POOL, as for the
// radosstore tests): each call opens its own radosstore.Store instances
// (its own cluster connection) on it; maps and data in two namespaces.
// Its objects are deleted at the test's end.
func radosShared(t *testing.T) sharedStores {
	conf := os.Getenv("ARCHIPELAGO_CEPH_CONF")
	if conf == "" {
		const msg = "no Ceph cluster: set ARCHIPELAGO_CEPH_CONF (scripts/micro-ceph.sh start DIR prints one)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI must run the RADOS tests")
		}
		t.Skip(msg)
	}
	pool := os.Getenv("ARCHIPELAGO_CEPH_POOL")
	if pool == "" {
		pool = "archipelago"
	}
	var b [6]byte
	rand.Read(b[:])
	ns := "twohost-model-" + hex.EncodeToString(b[:])
	opts := func(what string) radosstore.Options {
		return radosstore.Options{Pool: pool, CephConf: conf, CephxID: os.Getenv("ARCHIPELAGO_CEPH_ID"), Namespace: ns + "-" + what}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, o := range []radosstore.Options{opts("maps"), opts("data")} {
			for _, o := range []radosstore.Options{o, {Pool: o.Pool, CephConf: o.CephConf, CephxID: o.CephxID, Namespace: o.Namespace + ".locks"}} {
				s, err := radosstore.Open(o)
				if err != nil {
					t.Errorf("cleanup of namespace %s: %v", o.Namespace, err)
					continue
				}
				var names []string
				err = s.List(ctx, "", func(n string) error { names = append(names, n); return nil })
				for _, n := range names {
					if err := s.Delete(ctx, n); err != nil && !errors.Is(err, errs.ErrNotFound) {
						t.Errorf("cleanup of namespace %s: %v", o.Namespace, err)
					}
				}
				if err != nil {
					t.Errorf("cleanup of namespace %s: %v", o.Namespace, err)
				}
				s.Close()
			}
		}
	})
	return func(t *testing.T) (store.Store, store.Store, func()) {
		t.Helper()
		return storePair(t, func(which string) (store.Store, error) { return radosstore.Open(opts(which)) })
	}
}

func TestTwoHostModelSharedRADOSPool(t *testing.T) {
	for _, seed := range []uint64{21, 22} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			seed := modelSeed(t, seed)
			t.Logf("seed %d (replay: VOLUME_MODEL_SEED=%d go test -tags ceph -run 'TestTwoHostModelSharedRADOSPool/%d' ./volume)", seed, seed, seed)
			runTwoHostModel(t, seed, modelSteps(150), radosShared(t))
		})
	}
}
