package main

// open prepares the volume for I/O on this host. VOL_OPEN_EXCLUSIVE=True
// (Ganeti's default: instance start, disk activation, the end of a
// migration) takes the volume's lock for this host (vlmc open) and keeps
// it until close; it fails, naming the holder, while another host holds
// it. VOL_OPEN_EXCLUSIVE=False (both hosts during a live migration) takes
// no lock: the lock stays where it is, so the migration target's writes
// wait until the source closes.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 VOL_OPEN_EXCLUSIVE=True open

import (
	"context"
	"errors"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
)

func (p *provider) open() error {
	vol := p.req.Volume
	if !p.req.Exclusive {
		vi, err := p.info(vol)
		if err != nil {
			return err
		}
		p.logf("volume %q opened shared: no lock taken (held by %s)", vol, holder(vi))
		return nil
	}
	err := p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Open(ctx, vol) })
	if errors.Is(err, errs.ErrLocked) {
		return fmt.Errorf("%w (the instance's disk is still open on that host: close it there; if that host is dead for good, `vlmc unlock -f %s` fences it)", err, vol)
	}
	if err != nil {
		return err
	}
	p.logf("volume %q opened exclusive: locked by this host (%s)", vol, p.cfg.HostID)
	return nil
}

// holder says who holds a volume's lock.
func holder(vi volclient.Info) string {
	if vi.LockOwner == "" {
		return "nobody"
	}
	return vi.LockOwner
}
