package volume

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

func lockOwner(t *testing.T, e *Engine, name string) string {
	t.Helper()
	in, err := e.Info(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return in.LockOwner
}

func openSession(t *testing.T, e *Engine, name string, key SessionKey, write bool) string {
	t.Helper()
	id, err := e.OpenSession(context.Background(), name, key, write)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A read (map lookup, allocation query) never takes the lock: another
// host's write afterwards goes on without waiting.
func TestReadsTakeNoLock(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e
	b := engineAs(t, v, "host-b")
	const vol = "looked-at"
	if err := a.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := b.MapRead(ctx, vol, 0, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Allocated(ctx, vol, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, a, vol); o != "" || b.Held(vol) {
		t.Fatalf("after B's reads the lock is held by %q (B holds: %v), want free", o, b.Held(vol))
	}
	a.onWait = func(_, owner string) { t.Errorf("A's write waits for %s", owner) }
	if err := writeVol(ctx, a, v.dataStore(), vol, 0, fill('a', 4096)); err != nil {
		t.Fatal(err)
	}
	// B reads A's data without the lock, and still takes none.
	got, err := readVol(ctx, b, v.dataStore(), vol, 0, 4096)
	if err != nil || !bytes.Equal(got, fill('a', 4096)) {
		t.Fatalf("B reads %q, %v", runs(got), err)
	}
	if o := lockOwner(t, a, vol); o != "host-a" {
		t.Fatalf("lock owner %q, want host-a", o)
	}
}

// The lock a write took goes back when the last session that may write
// ends, after the data written is made durable; an explicit Open keeps it
// until Close.
func TestLastWriterReleasesLock(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	b := engineAs(t, v, "host-b")
	const vol = "written-then-left"
	if err := v.e.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	k1, k2, kr := SessionKey{Port: 1, PID: 10, Handle: 1}, SessionKey{Port: 1, PID: 10, Handle: 2}, SessionKey{Port: 2, PID: 11, Handle: 1}
	id := openSession(t, b, vol, k1, true)
	openSession(t, b, vol, k2, true)
	openSession(t, b, vol, kr, false) // a reader does not keep the lock
	if u, w := b.Sessions(vol); u != 3 || w != 2 {
		t.Fatalf("sessions %d, writers %d; want 3, 2", u, w)
	}
	// A write through the reference, not made durable by itself.
	segs, err := b.MapWrite(ctx, Ref(vol, id), 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.dataStore().WriteAt(ctx, segs[0].Object, fill('b', 4096), int64(segs[0].Offset), false); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "host-b" {
		t.Fatalf("after B's write the lock is held by %q", o)
	}
	if err := b.CloseSession(ctx, vol, k1); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "host-b" {
		t.Fatalf("one writer left: lock held by %q, want host-b", o)
	}
	if err := b.CloseSession(ctx, vol, k2); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "" || b.Held(vol) {
		t.Fatalf("after the last writer the lock is held by %q", o)
	}
	// The write was made durable before the lock went.
	v.crash(t)
	got, err := readVol(ctx, v.e, v.dataStore(), vol, 0, 4096)
	if err != nil || !bytes.Equal(got, fill('b', 4096)) {
		t.Fatalf("after a crash the volume reads %q, %v", runs(got), err)
	}
	a := v.e
	a.onWait = func(_, owner string) { t.Errorf("A's write waits for %s", owner) }
	if err := writeVol(ctx, a, v.dataStore(), vol, 4096, fill('a', 4096)); err != nil {
		t.Fatal(err)
	}
	a.onWait = nil
	if err := a.Close(ctx, vol); err != nil { // the lock a sessionless write took
		t.Fatal(err)
	}

	// With an explicit Open the lock stays after the last writer, until
	// Close; Close while a writer is open leaves it to that writer.
	if err := b.Open(ctx, vol); err != nil {
		t.Fatal(err)
	}
	openSession(t, b, vol, k1, true)
	if err := writeVol(ctx, b, v.dataStore(), Ref(vol, id), 0, fill('c', 10)); err != nil {
		t.Fatal(err)
	}
	if err := b.CloseSession(ctx, vol, k1); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "host-b" {
		t.Fatalf("opened volume: lock held by %q after its writer left, want host-b", o)
	}
	openSession(t, b, vol, k2, true)
	if err := b.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "host-b" {
		t.Fatalf("closed with a writer open: lock held by %q, want host-b", o)
	}
	if err := b.CloseSession(ctx, vol, k2); err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, vol); o != "" {
		t.Fatalf("closed, last writer gone: lock held by %q", o)
	}
}

// The sessions of a process that died are dropped, and with them the lock.
func TestDroppedSessionsReleaseLock(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	b := engineAs(t, v, "host-b")
	const vol = "killed-client"
	if err := v.e.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	dead, alive := SessionKey{Port: 3, PID: 100, Handle: 1}, SessionKey{Port: 4, PID: 200, Handle: 1}
	openSession(t, b, vol, dead, true)
	if err := writeVol(ctx, b, v.dataStore(), vol, 0, fill('x', 100)); err != nil {
		t.Fatal(err)
	}
	openSession(t, b, vol, alive, false)
	n, err := b.DropSessions(ctx, func(k SessionKey) bool { return k.PID == 100 })
	if err != nil || n != 1 {
		t.Fatalf("dropped %d, %v; want 1", n, err)
	}
	if u, w := b.Sessions(vol); u != 1 || w != 0 {
		t.Fatalf("sessions %d, writers %d; want 1, 0", u, w)
	}
	if o := lockOwner(t, b, vol); o != "" {
		t.Fatalf("lock held by %q after its writer's process died", o)
	}
}

// A write waiting for another host's lock is cancelled once no session of
// the volume on this host has a client any more.
func TestWaitCancelledWhenClientsGone(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e
	b := engineAs(t, v, "host-b")
	const vol = "waited-for"
	createOpen(t, a, vol)
	k := SessionKey{Port: 5, PID: 50, Handle: 7}
	other := SessionKey{Port: 5, PID: 50, Handle: 8}
	openSession(t, b, vol, k, true)
	openSession(t, b, vol, other, true)
	done, _ := waitingWrite(t, b, v.dataStore(), vol, 0, fill('b', 10), "host-a")
	if err := b.SessionGone(ctx, vol, k); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the write ended (%v) while another session is open", err)
	default:
	}
	if err := b.SessionGone(ctx, vol, other); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errs.ErrShutdown) {
			t.Fatalf("waiting write: %v, want ErrShutdown", err)
		}
	case <-time.After(time.Minute): // it would wait for ever
		t.Fatal("the waiting write still waits after its clients left")
	}
	// A new write of a gone session fails at once, without waiting.
	if err := writeVol(ctx, b, v.dataStore(), vol, 0, fill('b', 10)); !errors.Is(err, errs.ErrShutdown) {
		t.Fatalf("write after the clients left: %v, want ErrShutdown", err)
	}
	for _, key := range []SessionKey{k, other} {
		if err := b.CloseSession(ctx, vol, key); err != nil {
			t.Fatal(err)
		}
	}
	if u, _ := b.Sessions(vol); u != 0 {
		t.Fatalf("%d sessions left", u)
	}
	if o := lockOwner(t, b, vol); o != "host-a" {
		t.Fatalf("lock held by %q, want host-a", o)
	}
}

// A volume in use is not removed or renamed; forced, the remove ends its
// sessions, and their I/O never reaches a volume created after under the
// same name (here or on another host).
func TestSessionsBoundToIncarnation(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e
	b := engineAs(t, v, "host-b")
	const vol = "reincarnated"
	if err := a.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	k := SessionKey{Port: 1, PID: 1, Handle: 1}
	old := openSession(t, a, vol, k, true)
	if err := writeVol(ctx, a, v.dataStore(), Ref(vol, old), 0, fill('o', 100)); err != nil {
		t.Fatal(err)
	}
	err := a.Remove(ctx, vol)
	if !errors.Is(err, errs.ErrBusy) || !strings.Contains(err.Error(), `"`+vol+`"`) || !strings.Contains(err.Error(), "in use by 1 connection") {
		t.Fatalf("remove of a volume in use: %v, want ErrBusy naming it and 1 connection", err)
	}
	if err := a.Rename(ctx, vol, vol+"-new"); !errors.Is(err, errs.ErrBusy) {
		t.Fatalf("rename of a volume in use: %v, want ErrBusy", err)
	}
	if err := a.RemoveForce(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if u, _ := a.Sessions(vol); u != 0 {
		t.Fatalf("%d sessions left after a forced remove", u)
	}
	if err := a.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	stale := func(e *Engine, ref string) {
		t.Helper()
		if _, err := e.MapRead(ctx, ref, 0, 100); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("read of the removed incarnation: %v, want ErrNotFound", err)
		}
		if _, err := e.MapWrite(ctx, ref, 0, 100); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("write of the removed incarnation: %v, want ErrNotFound", err)
		}
		if err := e.Trim(ctx, ref, 0, 1<<20); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("trim of the removed incarnation: %v, want ErrNotFound", err)
		}
		if _, err := e.Allocated(ctx, ref, 0, 100); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("allocated of the removed incarnation: %v, want ErrNotFound", err)
		}
		if _, err := e.Info(ctx, ref); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("info of the removed incarnation: %v, want ErrNotFound", err)
		}
	}
	stale(a, Ref(vol, old))
	// The new volume is untouched.
	got, err := readVol(ctx, a, v.dataStore(), vol, 0, 100)
	if err != nil || !bytes.Equal(got, make([]byte, 100)) {
		t.Fatalf("the new volume reads %q, %v", runs(got), err)
	}

	// Another host's session, and a remove and create here: that host
	// cannot know, and its I/O fails all the same.
	if err := a.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	idB := openSession(t, b, vol, k, true)
	if err := writeVol(ctx, b, v.dataStore(), Ref(vol, idB), 0, fill('b', 100)); err != nil {
		t.Fatal(err)
	}
	if err := b.CloseSession(ctx, vol, k); err != nil { // gives the lock back
		t.Fatal(err)
	}
	openSession(t, b, vol, k, true)
	if err := a.Remove(ctx, vol); err != nil { // in use on B only
		t.Fatal(err)
	}
	if err := a.Create(ctx, vol, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx, vol); err != nil {
		t.Fatal(err)
	}
	stale(b, Ref(vol, idB))
	if o := lockOwner(t, a, vol); o != "" {
		t.Fatalf("B's stale write took the new volume's lock: held by %q", o)
	}
	if _, err := b.OpenSession(ctx, vol+"-gone", k, true); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("session on a missing volume: %v, want ErrNotFound", err)
	}
}

// Closing a volume that does not exist fails with ErrNotFound.
func TestCloseMissing(t *testing.T) {
	v := newEnv(t, modelBS)
	if err := v.e.Close(context.Background(), "never-created"); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("close of a missing volume: %v, want ErrNotFound", err)
	}
}
