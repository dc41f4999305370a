package xseg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Doorbells: how a sleeping port owner is woken.
//
// A futex wait is a system call, and the Go runtime keeps the caller's
// processor (P) in "syscall" state for as long as it sleeps. Our peers run
// with GOMAXPROCS=1, so while the port loop slept on the futex no other
// goroutine of the process could run (nbdd's readers of new NBD requests,
// filed's workers) until sysmon retook the P, 20 µs to 10 ms later; and
// sysmon, always finding such a P, polled every 20 µs. 4 KiB reads at
// queue depth 1 through nbdd, vlmcd and filed took 250 µs (qemu-nbd: 63).
//
// So a port whose owner asks for it (UseDoorbell) gets a doorbell: a FIFO
// next to the segment file
// (<ShmDir>/<segment>.bell.<port>) that the owner opens read-write and
// non-blocking, which puts it in the Go poller. The owner sleeps by
// reading it: the goroutine parks and the P runs the process's other
// goroutines, or waits in the poller. A waker writes one byte. The port's
// bell word holds the bind generation the doorbell belongs to (0: none;
// the owner sleeps on the futex, and wakers use it).
//
// The sleep/wake race is the futex one: the owner counts itself a waiter
// before it checks the rings, a waker pushes before it reads the waiter
// count; a byte written to the FIFO stays there until read, so a ring
// between the check and the read is not lost. Bytes left over make a later
// wait return early, which callers tolerate. One goroutine of the owner
// sleeps on a port at a time (the peer's loop); a second one would sleep
// until its timeout.

func bellPath(seg string, no uint32) string {
	return filepath.Join(ShmDir, fmt.Sprintf("%s.bell.%d", seg, no))
}

// bellFd is a waker's open doorbell of a port, for one bind generation.
type bellFd struct {
	fd  int
	gen uint32
}

// bells is a process's cache of the doorbells it rings.
type bells struct {
	fds     []atomic.Pointer[bellFd] // by port
	mu      sync.Mutex               // over opening and retired
	retired []int                    // fds of rebound ports, closed with the segment
	rung    atomic.Uint64            // rings, for tests and tools
}

// openBell makes and opens the doorbell of port p for its owner, and
// announces it in the port. On failure the port keeps using the futex.
// UseDoorbell makes the owner sleep on a doorbell instead of the futex:
// for a process that also waits on sockets or other pollable files from
// goroutines (nbdd), which a futex sleep would hold up. A process whose
// every input comes through the segment is better off on the futex, the
// cheaper wake-up (measured: see docs/xseg.md). Call it after Bind, before
// the first Wait; on failure the port stays on the futex.
func (p *Port) UseDoorbell() error {
	if p.bell != nil {
		return nil
	}
	path := bellPath(p.s.name, p.no)
	if err := unix.Mkfifo(path, 0o660); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("port %d doorbell %s: %w", p.no, path, err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("port %d doorbell %s: %w", p.no, path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd) // something else took the name
		return fmt.Errorf("port %d doorbell %s: not a FIFO", p.no, path)
	}
	p.bell = os.NewFile(uintptr(fd), path)
	p.p.bell.Store(p.p.bindGen.Load())
	return nil
}

// closeBell stops using the doorbell: wakers fall back to the futex.
func (p *Port) closeBell() {
	if p.bell == nil {
		return
	}
	p.p.bell.CompareAndSwap(p.p.bindGen.Load(), 0)
	p.bell.Close()
	p.bell = nil
	os.Remove(bellPath(p.s.name, p.no))
}

// sleepOnBell waits for a ring or d. The caller counted itself a waiter
// and found the rings empty.
func (p *Port) sleepOnBell(d time.Duration) {
	p.bell.SetReadDeadline(time.Now().Add(d))
	var buf [64]byte
	p.bell.Read(buf[:]) // a ring, a timeout or a close: each ends the wait
}

// ring wakes the owner of port no through its doorbell of generation gen.
// False if that is not possible (the owner is gone or closed it).
func (s *Segment) ring(no, gen uint32) bool {
	slot := &s.bells.fds[no]
	b := slot.Load()
	if b == nil || b.gen != gen {
		s.bells.mu.Lock()
		if b = slot.Load(); b == nil || b.gen != gen {
			fd, err := unix.Open(bellPath(s.name, no), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				s.bells.mu.Unlock()
				return false
			}
			if b != nil {
				// Another goroutine may be writing to it right now:
				// close it with the segment, not here.
				s.bells.retired = append(s.bells.retired, b.fd)
			}
			b = &bellFd{fd: fd, gen: gen}
			slot.Store(b)
		}
		s.bells.mu.Unlock()
	}
	one := [1]byte{1}
	for {
		_, err := unix.Write(b.fd, one[:])
		switch err {
		case nil, unix.EAGAIN: // EAGAIN: full, so the owner has rings to read
			s.bells.rung.Add(1)
			return true
		case unix.EINTR:
			continue
		}
		return false
	}
}

// closeBells closes the doorbells this process opened to ring.
func (s *Segment) closeBells() {
	s.bells.mu.Lock()
	defer s.bells.mu.Unlock()
	for i := range s.bells.fds {
		if b := s.bells.fds[i].Swap(nil); b != nil {
			unix.Close(b.fd)
		}
	}
	for _, fd := range s.bells.retired {
		unix.Close(fd)
	}
	s.bells.retired = nil
}

// removeBells removes the doorbell FIFOs of segment name.
func removeBells(name string) {
	ents, _ := os.ReadDir(ShmDir)
	for _, e := range ents {
		if rest, ok := strings.CutPrefix(e.Name(), name+".bell."); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			os.Remove(filepath.Join(ShmDir, e.Name()))
		}
	}
}
