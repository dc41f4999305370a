package composer

import (
	"time"

	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

var _ peer.AsyncHandler = (*Composer)(nil)

// ServeAsync is the fast path of READ and WRITE: when the mapping cache
// covers the whole range, the parts go to the blocker straight from the
// port's loop (startIO, the path Serve uses too) and the last part's
// reply answers the request, with no worker and no mapper involved.
// Anything else (a cache miss, a write that would wait behind a snapshot,
// a full request pool) takes the ordinary path.
func (c *Composer) ServeAsync(p *peer.Peer, r *xseg.Request) bool {
	op := r.Op()
	if op != xseg.OpRead && op != xseg.OpWrite {
		return false
	}
	n := r.Size()
	if n == 0 || n > uint64(len(r.Buffer())) {
		return false
	}
	start := time.Now()
	name := r.Target()
	segs, _, _ := c.cache.lookup(name, r.Offset(), n, op == xseg.OpWrite)
	if segs == nil {
		return false
	}
	v := c.get(name)
	if op == xseg.OpWrite && !v.gate.TryRLock() {
		c.put(name, v)
		return false
	}
	release := func() {
		if op == xseg.OpWrite {
			v.gate.RUnlock()
		}
		c.put(name, v)
	}
	err := c.startIO(p, r, segs, func(err error) {
		err = ioDone(v, r, start, err)
		release()
		p.Answer(r, err)
	})
	if err != nil {
		// Nothing was sent: the ordinary path serves it (and names what
		// fails, if it fails again).
		release()
		return false
	}
	return true
}
