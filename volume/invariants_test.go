package volume

import (
	"context"
	"testing"
)

// checkInvariants runs Check (the walk of every live volume's map
// straight from storage) over v's maps store.
func checkInvariants(t testing.TB, v *env) {
	t.Helper()
	if err := Check(context.Background(), v.maps); err != nil {
		t.Fatalf("invariants: %v", err)
	}
}
