package xseg

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Locks in the segment are words holding the pid of the process that holds
// them (0 = free). Critical sections are a few stores long and make no
// system call. A waiter spins, then sleeps briefly, and from time to time
// checks whether the holder still lives; if it died, the waiter takes the
// lock over with a compare-and-swap and the caller repairs the structure the
// lock guards (every such structure can be rebuilt from the request states).
//
// Goroutines of one process share its pid, so a process never steals from
// itself: it just waits for its other goroutine.
//
// Lock order: janitorLock, then a port lock, then heapLock. Two port locks
// are never held together.

const (
	spinTries  = 64
	checkEvery = 256 // sleeping rounds between liveness checks
)

// pidLock takes the lock word w for pid me. It returns true when the lock
// was taken over from a dead holder: the guarded data may be half-updated.
func pidLock(w *atomic.Uint32, me uint32) (stolen bool) {
	for i := 0; ; i++ {
		h := w.Load()
		if h == 0 {
			if w.CompareAndSwap(0, me) {
				return false
			}
			continue
		}
		if i < spinTries {
			runtime.Gosched()
			continue
		}
		if h != me && (i-spinTries)%checkEvery == 0 && !pidAlive(h) {
			if w.CompareAndSwap(h, me) {
				return true
			}
			continue
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// pidTryLock takes w once if it is free or its holder is dead.
func pidTryLock(w *atomic.Uint32, me uint32) (ok, stolen bool) {
	h := w.Load()
	if h == 0 {
		return w.CompareAndSwap(0, me), false
	}
	if h != me && !pidAlive(h) && w.CompareAndSwap(h, me) {
		return true, true
	}
	return false, false
}

func pidUnlock(w *atomic.Uint32, me uint32) {
	if !w.CompareAndSwap(me, 0) {
		panic("xseg: unlock of a lock not held by this process")
	}
}
