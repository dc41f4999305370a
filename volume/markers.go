package volume

import (
	"context"
	"fmt"
)

// Root markers (see docs/gc.md): an operation that makes a header reach
// objects that existed before it — snapshot (the snapshot's name), clone
// (the clone's), rename (the new name), rollback (the volume) — first
// creates the marker object archip_root_<name> in the maps store, durable,
// before it changes any header. The collector walks every marker's name
// after its mark, so a root it could miss while listing volumes (a
// snapshot taken, a clone made, a volume renamed during the walk) is
// walked all the same; only the collector deletes markers, once their
// operation is over.
const rootMarkerPrefix = legacyPrefix + "root_"

// gcLockName names the pool-wide lock of the collector (lockName of it is
// the store's lock; it goes through the intents like a volume's).
const gcLockName = legacyPrefix + "gc"

func rootMarker(name string) string { return rootMarkerPrefix + name }

// markRoot creates name's root marker (an empty object, FUA); an existing
// one is left as it is.
func (e *Engine) markRoot(ctx context.Context, name string) error {
	if err := e.maps.WriteAt(ctx, rootMarker(name), nil, 0, true); err != nil {
		return fmt.Errorf("volume %q: root marker: %w", name, err)
	}
	return nil
}
