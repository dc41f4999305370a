package main

// close ends this host's use of the volume: it releases the volume's
// lock if this host holds it, so that another host (a live migration's
// target, whose writes wait meanwhile) can take it. Ganeti calls it where
// the instance does not run (any more): on the target before a
// migration, on the source after it, before the target's exclusive open.
// A device still mapped here keeps a session that holds the lock, so
// close unmaps it (flushing what was written; Ganeti's detach that
// follows finds nothing to do) unless it is in use: then close fails. A
// lock another host holds, or no lock, is nothing to release: success.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 close

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
)

// closeWait is how long close waits for this host's other sessions of
// the volume (an NBD client that just exited, such as the migration
// source's QEMU with access=userspace) to end and give the lock back.
const closeWait = 30 * time.Second

func (p *provider) close() error {
	vol := p.req.Volume
	unlock, err := p.lockVolume()
	if err != nil {
		return err
	}
	defer unlock()
	err = p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Close(ctx, vol) })
	switch {
	case errors.Is(err, errs.ErrNotOwner):
		p.logf("volume %q is locked by another host: nothing to release here", vol)
		return nil
	case errors.Is(err, errs.ErrNotFound):
		p.logf("volume %q does not exist: nothing to close", vol)
		return nil
	case err != nil:
		return err
	}
	vi, err := p.info(vol)
	if err != nil {
		return err
	}
	if vi.LockOwner != p.cfg.HostID {
		p.logf("volume %q closed: not locked by this host (held by %s)", vol, holder(vi))
		return nil
	}
	// The sessions of this host's mapping keep the lock: unmap it.
	ms, err := p.mappings()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := p.unmap(m, " to give the lock back"); err != nil {
			return err
		}
	}
	start := time.Now()
	for {
		vi, err := p.info(vol)
		if err != nil {
			return err
		}
		if vi.LockOwner != p.cfg.HostID {
			p.logf("volume %q closed: lock released (held by %s)", vol, holder(vi))
			return nil
		}
		if time.Since(start) > closeWait {
			return fmt.Errorf("volume %q: still locked by this host (%s) %v after close: a connection here (an NBD client, a mapping) keeps writing it: %w",
				vol, p.cfg.HostID, closeWait, errs.ErrBusy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
