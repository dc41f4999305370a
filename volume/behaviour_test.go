package volume

import (
	"bytes"
	"context"
	"testing"
)

// The behaviours the original Archipelago's tests checked, at the engine
// level (see REFERENCE.md, "Tools and integration").
func TestOriginalBehaviours(t *testing.T) {
	ctx := context.Background()
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	read := func(t *testing.T, v *env, name string, off, n uint64) []byte {
		t.Helper()
		b, err := readVol(ctx, v.e, v.dataStore(), name, off, n)
		must(t, err)
		return b
	}

	t.Run("write and read survive a restart", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "restart-vol", 1<<30))
		must(t, writeVol(ctx, v.e, v.dataStore(), "restart-vol", 5<<20, fill('r', 8192)))
		v.restart(t)
		if got := read(t, v, "restart-vol", 5<<20, 8192); !bytes.Equal(got, fill('r', 8192)) {
			t.Fatalf("after restart: %s", runs(got))
		}
		v.crash(t)
		if got := read(t, v, "restart-vol", 5<<20, 8192); !bytes.Equal(got, fill('r', 8192)) {
			t.Fatalf("after crash: %s", runs(got))
		}
	})

	t.Run("snapshot keeps old data after the origin is written", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "origin-vol", 1<<30))
		must(t, writeVol(ctx, v.e, v.dataStore(), "origin-vol", 0, fill('o', 4096)))
		must(t, v.e.Snapshot(ctx, "origin-vol", "origin-snap"))
		must(t, writeVol(ctx, v.e, v.dataStore(), "origin-vol", 0, fill('n', 4096)))
		if got := read(t, v, "origin-snap", 0, 4096); !bytes.Equal(got, fill('o', 4096)) {
			t.Fatalf("snapshot: %s", runs(got))
		}
		if got := read(t, v, "origin-vol", 0, 4096); !bytes.Equal(got, fill('n', 4096)) {
			t.Fatalf("origin: %s", runs(got))
		}
	})

	t.Run("clone of 100 GiB to 200 GiB reads zeros past the parent", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "image-vol", 100<<30))
		last := uint64(100<<30) - 4096
		must(t, writeVol(ctx, v.e, v.dataStore(), "image-vol", last, fill('i', 4096)))
		must(t, v.e.Snapshot(ctx, "image-vol", "image-snap"))
		must(t, v.e.Clone(ctx, "image-snap", "big-clone", 200<<30))
		in, err := v.e.Info(ctx, "big-clone")
		must(t, err)
		if in.Size != 200<<30 || in.Parent != "image-snap" {
			t.Fatalf("info %+v", in)
		}
		got := read(t, v, "big-clone", last, 3*4096)
		if !bytes.Equal(got, append(fill('i', 4096), make([]byte, 8192)...)) {
			t.Fatalf("clone around the parent's end: %s", runs(got))
		}
		if got := read(t, v, "big-clone", 200<<30-8192, 8192); !bytes.Equal(got, make([]byte, 8192)) {
			t.Fatalf("clone's end: %s", runs(got))
		}
	})

	t.Run("writes to a clone do not leak to the parent", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "parent-vol", 1<<30))
		must(t, writeVol(ctx, v.e, v.dataStore(), "parent-vol", 0, fill('p', 8192)))
		must(t, v.e.Snapshot(ctx, "parent-vol", "parent-snap"))
		must(t, v.e.Clone(ctx, "parent-snap", "child-vol", 0))
		must(t, writeVol(ctx, v.e, v.dataStore(), "child-vol", 100, fill('c', 100)))
		must(t, writeVol(ctx, v.e, v.dataStore(), "child-vol", 1<<29, fill('c', 100)))
		for _, n := range []string{"parent-snap", "parent-vol"} {
			if got := read(t, v, n, 0, 8192); !bytes.Equal(got, fill('p', 8192)) {
				t.Fatalf("%s: %s", n, runs(got))
			}
			if got := read(t, v, n, 1<<29, 100); !bytes.Equal(got, make([]byte, 100)) {
				t.Fatalf("%s: %s", n, runs(got))
			}
		}
	})

	t.Run("re-created names get a new epoch", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "again-vol", 1<<30))
		segs, err := v.e.MapWrite(ctx, "again-vol", 0, 1)
		must(t, err)
		first := segs[0].Object
		in1, err := v.e.Info(ctx, "again-vol")
		must(t, err)
		must(t, v.e.Remove(ctx, "again-vol"))
		must(t, v.e.Create(ctx, "again-vol", 1<<30))
		in2, err := v.e.Info(ctx, "again-vol")
		must(t, err)
		if in2.Epoch <= in1.Epoch {
			t.Fatalf("epoch %d after re-creation, was %d", in2.Epoch, in1.Epoch)
		}
		segs, err = v.e.MapWrite(ctx, "again-vol", 0, 1)
		must(t, err)
		if segs[0].Object == first {
			t.Fatalf("object name %q reused", first)
		}
		// Also across a rename away and a re-creation of the name.
		must(t, v.e.Rename(ctx, "again-vol", "moved-vol"))
		must(t, v.e.Create(ctx, "again-vol", 1<<30))
		segs2, err := v.e.MapWrite(ctx, "again-vol", 0, 1)
		must(t, err)
		segs3, err := v.e.MapWrite(ctx, "moved-vol", 4096*1024, 1)
		must(t, err)
		if segs2[0].Object == segs[0].Object || segs3[0].Object == segs2[0].Object {
			t.Fatalf("names collide: %q %q %q", segs[0].Object, segs2[0].Object, segs3[0].Object)
		}
	})

	t.Run("reads succeed while another host holds the lock", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "locked-vol", 1<<30))
		must(t, writeVol(ctx, v.e, v.dataStore(), "locked-vol", 0, fill('l', 10)))
		must(t, v.e.Open(ctx, "locked-vol"))
		other := engineAs(t, v, "host-b")
		got, err := readVol(ctx, other, v.dataStore(), "locked-vol", 0, 10)
		must(t, err)
		if !bytes.Equal(got, fill('l', 10)) {
			t.Fatalf("read %s", runs(got))
		}
	})

	t.Run("after a restart with a new identity the lock needs force", func(t *testing.T) {
		v := newEnv(t, 0)
		must(t, v.e.Create(ctx, "host-vol", 1<<30))
		must(t, v.e.Open(ctx, "host-vol"))
		v.crash(t) // the host dies holding the lock
		v.owner = "host-new"
		v.restart(t)
		wantLockedBy(t, v.e.Open(ctx, "host-vol"), "host-a")
		must(t, v.e.Unlock(ctx, "host-vol", true))
		must(t, v.e.Open(ctx, "host-vol"))
	})
}
