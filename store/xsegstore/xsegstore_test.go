package xsegstore_test

import (
	"testing"

	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// TestFiledConformance runs the store conformance suite against filed
// processes, through the segment: each sub-test gets a fresh filed on a
// fresh directory and port.
func TestFiledConformance(t *testing.T) {
	open := testbin.BlockerStores(t, "xsegstoretest", "filed", func(t testing.TB) []string {
		return []string{"--archip-dir", t.TempDir()}
	})
	t.Run("Store", func(t *testing.T) { storetest.Run(t, func(t *testing.T) store.Store { return open(t) }) })
	t.Run("Locker", func(t *testing.T) { storetest.RunLocker(t, func(t *testing.T) store.Store { return open(t) }) })
}
