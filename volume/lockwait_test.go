package volume

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/store/faultstore"
)

// TestOnLockWait: Options.OnLockWait is called once when a MapWrite starts
// to wait for another owner's lock, and its end once when the wait ends:
// with nil when the lock was got, with the error when the write gave up.
// A write that finds the lock free or its own does not call it.
func TestOnLockWait(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	a := v.e // host-a
	type event struct {
		name string
		end  bool
		err  error
	}
	events := make(chan event, 10)
	b, err := New(faultstore.Wrap(v.maps, v.plan), faultstore.Wrap(v.data, v.plan), Options{Owner: "host-b", BlockSize: v.bs,
		OnLockWait: func(name string) func(error) {
			events <- event{name: name}
			return func(err error) { events <- event{name: name, end: true, err: err} }
		}})
	if err != nil {
		t.Fatal(err)
	}
	b.pollMin, b.pollMax = 50*time.Microsecond, time.Millisecond
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	next := func() event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(time.Minute):
			t.Fatal("OnLockWait not called, or its end not")
		}
		return event{}
	}
	must(a.Create(ctx, "vol", 1<<20))
	must(a.Open(ctx, "vol"))

	done := make(chan error, 1)
	go func() { _, err := b.MapWrite(ctx, "vol", 0, 4096); done <- err }()
	if e := next(); e != (event{name: "vol"}) {
		t.Fatalf("first event %+v, want the start of a wait for vol", e)
	}
	select {
	case e := <-events:
		t.Fatalf("%+v while A still holds the lock", e)
	case <-time.After(20 * time.Millisecond):
	}
	must(a.Close(ctx, "vol"))
	must(<-done)
	if e := next(); e != (event{name: "vol", end: true}) {
		t.Fatalf("event %+v, want the end of the wait, lock got", e)
	}
	// B holds the lock now: no wait.
	_, err = b.MapWrite(ctx, "vol", 0, 4096)
	must(err)
	select {
	case e := <-events:
		t.Fatalf("%+v for a write under B's own lock", e)
	default:
	}
	must(b.Close(ctx, "vol"))

	// A wait that gives up ends with its error.
	must(a.Open(ctx, "vol"))
	cctx, cancel := context.WithCancel(ctx)
	b.onWait = func(string, string) { cancel() }
	_, err = b.MapWrite(cctx, "vol", 0, 4096)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if e := next(); e != (event{name: "vol"}) {
		t.Fatalf("event %+v, want the start of a wait", e)
	}
	if e := next(); !e.end || !errors.Is(e.err, context.Canceled) {
		t.Fatalf("event %+v, want the end of the wait with context.Canceled", e)
	}
}
