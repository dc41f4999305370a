package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// TestCheckFindsSharedOwnedObjects checks that Check, which the model
// tests and the crash tests run over shared storage, finds an object two
// volumes would both write in place: a header copied to a second name.
func TestCheckFindsSharedOwnedObjects(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	if err := v.e.Create(ctx, "check-vol", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, v.e, v.dataStore(), "check-vol", 0, fill('a', 10)); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Snapshot(ctx, "check-vol", "check-snap"); err != nil {
		t.Fatal(err)
	}
	if err := writeVol(ctx, v.e, v.dataStore(), "check-vol", 0, fill('b', 10)); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, v.maps); err != nil {
		t.Fatalf("a consistent store: %v", err)
	}
	if err := v.maps.Copy(ctx, "check-vol", "check-twin"); err != nil {
		t.Fatal(err)
	}
	err := Check(ctx, v.maps)
	if !errors.Is(err, errs.ErrCorrupt) || !strings.Contains(err.Error(), `"check-twin"`) {
		t.Fatalf("Check with two volumes owning the same objects: %v", err)
	}
}
