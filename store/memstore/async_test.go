package memstore_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/store"
	"github.com/archipelago-go/archipelago/store/memstore"
	"github.com/archipelago-go/archipelago/store/storetest"
)

// The asynchronous store passes every suite: the Store, Locker and crash
// contracts through its embedded Store, the AsyncStore contract through
// its workers, with delays so that operations end out of order.
func openAsync(*testing.T) *memstore.Async {
	return memstore.NewAsync(memstore.AsyncOptions{Workers: 4, MaxDelay: 200 * time.Microsecond})
}

func TestAsyncConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openAsync(t) })
}

func TestAsyncLocker(t *testing.T) {
	storetest.RunLocker(t, func(t *testing.T) store.Store { return openAsync(t) })
}

func TestAsyncCrash(t *testing.T) { storetest.RunCrash(t, openAsync) }

func TestAsync(t *testing.T) { storetest.RunAsync(t, openAsync) }

func TestAsyncCrashDurable(t *testing.T) { storetest.RunAsyncCrash(t, openAsync) }

// TestAsyncReorders: operations held together end in another order than
// they started, and each still does what it was asked. Without the
// reordering the blocker tests that rely on it would test nothing.
func TestAsyncReorders(t *testing.T) {
	s := memstore.NewAsync(memstore.AsyncOptions{Workers: 1, Seed: 7})
	defer s.Close()
	const n = 32
	s.Hold()
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		if err := s.WriteAsync("obj", []byte{byte(i)}, int64(i), func(err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if q := s.Queued(); q != n {
		t.Fatalf("%d operations queued while held, want %d", q, n)
	}
	if s.InFlight() != n {
		t.Fatalf("%d operations in flight while held, want %d", s.InFlight(), n)
	}
	s.Release()
	wg.Wait()
	inOrder := true
	for i, v := range order {
		inOrder = inOrder && v == i
	}
	if len(order) != n || inOrder {
		t.Errorf("completion order %v: want all %d, shuffled", order, n)
	}
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(i)
	}
	got := make([]byte, n)
	if m, err := s.ReadAt(t.Context(), "obj", got, 0); err != nil || m != n || !bytes.Equal(got, want) {
		t.Errorf("after the shuffled writes: %v, %v", got[:m], err)
	}
	if r, w := s.Started(); r != 0 || w != n {
		t.Errorf("Started = %d reads, %d writes; want 0, %d", r, w, n)
	}
}

// TestAsyncCloseReleasesHold: Close runs the operations a Hold kept back
// and calls them back before it returns.
func TestAsyncCloseReleasesHold(t *testing.T) {
	s := memstore.NewAsync(memstore.AsyncOptions{})
	s.Hold()
	called := make(chan error, 1)
	if err := s.WriteAsync("obj", []byte("x"), 0, func(err error) { called <- err }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-called:
		if err != nil {
			t.Errorf("held write run by Close: %v", err)
		}
	default:
		t.Fatal("Close returned before the held write was called back")
	}
	// The write is durable: a crash of the closed store keeps it.
	c := s.Crash()
	defer c.Close()
	if n, err := c.Stat(t.Context(), "obj"); err != nil || n != 1 {
		t.Errorf("held write after Close and a crash: size %d, %v", n, err)
	}
}
