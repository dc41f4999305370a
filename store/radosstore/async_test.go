//go:build ceph

package radosstore_test

import (
	"testing"

	"github.com/archipelago-go/archipelago/store/radosstore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// TestAsync checks ReadAsync and WriteAsync (librados aio, what radosd
// serves READ and WRITE with) against the asynchronous contract, which
// memstore.Async passes too: the blocker's asynchronous path is tested
// without Ceph over that one.
func TestAsync(t *testing.T) {
	open := opener(t)
	storetest.RunAsync(t, func(t *testing.T) *radosstore.Store { return open(t).(*radosstore.Store) })
}
