package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/archipelago-go/archipelago/errs"
)

// handle is an open object: a buffered file and, with Direct, an O_DIRECT
// one on the same file.
type handle struct {
	f vfile
	d vfile // nil without Direct
	// seen is Store.seq after the open: the file and its directories
	// existed then (see Store.syncPath).
	seen uint64
}

func (h *handle) close() {
	// Close errors are dropped: durability comes from fdatasync, and
	// Sync reopens whatever it must flush.
	h.f.Close()
	if h.d != nil {
		h.d.Close()
	}
}

// entry is a cached object. name, ready and, once ready is closed, h and
// err are fixed; the rest is guarded by fileCache.mu.
type entry struct {
	name  string
	ready chan struct{} // closed when the open finished
	h     *handle       // nil if the open failed
	err   error

	refs int // users between acquire and release
	// prev and next link e into fileCache.idle iff refs == 0 and
	// cached (an intrusive list: releasing an entry allocates nothing).
	prev, next *entry
	cached     bool // in fileCache.entries
}

// fileCache keeps at most max objects open, closing the least recently used
// idle ones. A user acquires an entry and releases it when done; an entry in
// use is never closed, so the cache may exceed max while all are busy.
type fileCache struct {
	max  int
	open func(name string, create bool) (*handle, error)

	// mu guards everything below and the mutable fields of every entry.
	// It is never held across I/O.
	mu      sync.Mutex
	closed  bool
	entries map[string]*entry
	idle    idleList // front is the most recently used

	stale atomic.Int64 // cached files found replaced or deleted
}

func newFileCache(max int, open func(string, bool) (*handle, error)) *fileCache {
	return &fileCache{max: max, open: open, entries: make(map[string]*entry)}
}

// acquire returns the open entry of object name, opening the file (and
// creating it if create) when it is not cached. The caller must release it.
//
// A cached file is used only if its path still names it (vfile.Same):
// another process or host sharing the directory may have deleted, renamed
// or replaced the object since it was opened, and I/O through the old file
// would read stale data or write into a file nobody will read again. A
// stale entry is dropped and the path opened anew (not found if it is
// gone and create is false).
func (c *fileCache) acquire(name string, create bool) (*entry, error) {
	for attempt := 0; ; attempt++ {
		if attempt >= 10 {
			return nil, fmt.Errorf("open %q: replaced or deleted by others too often meanwhile: %w", name, errs.ErrBusy)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errClosed
		}
		if e := c.entries[name]; e != nil {
			e.refs++
			c.idle.remove(e)
			c.mu.Unlock()
			<-e.ready
			if e.err == nil {
				err := e.h.f.Same()
				if err == nil {
					return e, nil
				}
				c.drop(e)
				c.release(e)
				// ESTALE: NFS's word for a file deleted by another client.
				if errors.Is(err, errStale) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESTALE) {
					c.stale.Add(1)
					continue
				}
				return nil, err
			}
			c.release(e)
			// The opener did not create the file; this caller must.
			if create && errors.Is(e.err, fs.ErrNotExist) {
				continue
			}
			return nil, e.err
		}
		// Enter the entry before opening, so that an invalidate after a
		// concurrent unlink or rename finds it.
		e := &entry{name: name, ready: make(chan struct{}), refs: 1, cached: true}
		c.entries[name] = e
		c.mu.Unlock()

		e.h, e.err = c.open(name, create)
		if e.err != nil {
			c.drop(e)
			close(e.ready)
			c.release(e)
			return nil, e.err
		}
		close(e.ready)
		c.mu.Lock()
		victims := c.trimLocked()
		c.mu.Unlock()
		closeEntries(victims)
		return e, nil
	}
}

// drop takes e out of the cache if it is still there: later acquires open
// the path anew. Users of e finish with it; the last closes it.
func (c *fileCache) drop(e *entry) {
	c.mu.Lock()
	if e.cached && c.entries[e.name] == e {
		delete(c.entries, e.name)
	}
	e.cached = false
	c.mu.Unlock()
}

// release ends a use of e.
func (c *fileCache) release(e *entry) {
	var victims []*entry
	c.mu.Lock()
	e.refs--
	if e.refs == 0 && e.h != nil {
		if e.cached {
			c.idle.pushFront(e)
			victims = c.trimLocked()
		} else {
			victims = append(victims, e)
		}
	}
	c.mu.Unlock()
	closeEntries(victims)
}

// invalidate drops the cached file of name, which was unlinked or replaced:
// the next acquire opens the path anew. Users of the old file finish with it.
func (c *fileCache) invalidate(name string) {
	c.mu.Lock()
	e := c.entries[name]
	if e == nil {
		c.mu.Unlock()
		return
	}
	delete(c.entries, name)
	e.cached = false
	var victims []*entry
	if e.next != nil {
		c.idle.remove(e)
		victims = append(victims, e)
	}
	c.mu.Unlock()
	closeEntries(victims)
}

// trimLocked removes idle entries, least recently used first, while more than
// max are cached, and returns them for closing.
func (c *fileCache) trimLocked() []*entry {
	var victims []*entry
	for len(c.entries) > c.max && c.idle.n > 0 {
		e := c.idle.back()
		c.idle.remove(e)
		delete(c.entries, e.name)
		e.cached = false
		victims = append(victims, e)
	}
	return victims
}

// close closes every idle file and fails later acquires; files in use close
// on release.
func (c *fileCache) close() {
	c.mu.Lock()
	c.closed = true
	var victims []*entry
	for c.idle.n > 0 {
		e := c.idle.back()
		c.idle.remove(e)
		victims = append(victims, e)
	}
	for _, e := range c.entries {
		e.cached = false
	}
	clear(c.entries)
	c.mu.Unlock()
	closeEntries(victims)
}

// size returns the number of cached objects.
func (c *fileCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func closeEntries(es []*entry) {
	for _, e := range es {
		e.h.close()
	}
}

// idleList is a doubly linked list of entries through their prev and next
// fields, with a sentinel; the zero value is empty.
type idleList struct {
	root entry // root.next is the front, root.prev the back
	n    int
}

func (l *idleList) pushFront(e *entry) {
	if l.root.next == nil {
		l.root.next, l.root.prev = &l.root, &l.root
	}
	e.prev, e.next = &l.root, l.root.next
	l.root.next.prev = e
	l.root.next = e
	l.n++
}

// remove takes e out of the list if it is in it.
func (l *idleList) remove(e *entry) {
	if e.next == nil {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	l.n--
}

// back returns the least recently used entry; the list must not be empty.
func (l *idleList) back() *entry { return l.root.prev }
