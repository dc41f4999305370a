package main

// remove removes the volume, unmapping it here first if it is still
// mapped (Ganeti detaches before, but a device left mapped would keep a
// session open and the remove refused). A volume that is already gone is
// success: Ganeti retries a failing remove for 30 s, and a remove that
// went through but whose answer was lost must not fail the retry. The
// snapshot create took of an origin volume (<VOL_NAME>.origin) goes too.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 remove

import (
	"context"
	"errors"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
)

func (p *provider) remove() error {
	vol := p.req.Volume
	unlock, err := p.lockVolume()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := p.unmapAll(); err != nil {
		return err
	}
	err = p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Remove(ctx, vol) })
	switch {
	case errors.Is(err, errs.ErrNotFound):
		p.logf("volume %q does not exist (removed already): nothing to do", vol)
	case err != nil:
		return err
	default:
		p.logf("volume %q removed", vol)
	}
	snap := vol + originSuffix
	si, err := p.info(snap)
	if err != nil || !si.Snapshot {
		return nil
	}
	err = p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Remove(ctx, snap) })
	if err != nil && !errors.Is(err, errs.ErrNotFound) {
		p.logf("volume %q: its origin's snapshot %q stays: %v", vol, snap, err)
		return nil
	}
	p.logf("volume %q: removed %q, the snapshot of its origin", vol, snap)
	return nil
}
