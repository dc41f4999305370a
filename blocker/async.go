package blocker

import (
	"fmt"

	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// asyncStore is the optional ability of a store to start a read or write
// and report its end through a callback (radosstore, with librados aio).
// The buffer stays untouched by the caller until done is called.
type asyncStore interface {
	ReadAsync(name string, p []byte, off int64, done func(n int, err error)) error
	WriteAsync(name string, p []byte, off int64, done func(err error)) error
}

var _ peer.AsyncHandler = (*Blocker)(nil)

// ServeAsync starts READ and WRITE on a store that can run them
// asynchronously, from the port's loop, and answers from their completion:
// no worker waits per request. Everything else (and a store without the
// ability) takes the ordinary path.
func (b *Blocker) ServeAsync(p *peer.Peer, r *xseg.Request) bool {
	as, ok := b.st.(asyncStore)
	op := r.Op()
	if !ok || (op != xseg.OpRead && op != xseg.OpWrite) || r.Flags()&xseg.FlagFlush != 0 ||
		r.Size() == 0 || r.Size() > uint64(len(r.Buffer())) {
		return false
	}
	name, data, off := r.Target(), r.Data(), int64(r.Offset())
	answer := func(err error) {
		if err != nil {
			err = fmt.Errorf("%s %q: %w", op, name, err)
		}
		p.Answer(r, err)
	}
	var err error
	if op == xseg.OpRead {
		err = as.ReadAsync(name, data, off, func(n int, err error) {
			if err == nil {
				clear(data[n:])
				r.SetServiced(uint64(n))
			}
			answer(err)
		})
	} else {
		err = as.WriteAsync(name, data, off, func(err error) {
			if err == nil {
				r.SetServiced(r.Size())
			}
			answer(err)
		})
	}
	return err == nil // on error the ordinary path runs it and says why
}
