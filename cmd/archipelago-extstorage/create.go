package main

// create makes the volume: blank and thin, of VOL_SIZE MiB, or with
// origin=<snapshot> (EXTP_ORIGIN) a clone of that snapshot, of VOL_SIZE
// MiB, which must be at least the snapshot's size. origin=<volume> clones
// a snapshot of that volume taken now, named <VOL_NAME>.origin (remove
// removes it with the disk).
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 VOL_SIZE=10240 create
//	$ VOL_NAME=0f1e2d3c.ext.disk1 VOL_SIZE=10240 EXTP_ORIGIN=debian-12-image create

import (
	"context"
	"errors"
	"fmt"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
)

// originSuffix names the snapshot create takes of an origin that is a
// volume: <VOL_NAME>.origin.
const originSuffix = ".origin"

func (p *provider) create() error {
	vol, size := p.req.Volume, p.req.SizeMiB<<20
	origin := p.req.Origin()
	if origin == "" {
		err := p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Create(ctx, vol, size) })
		if err != nil {
			return err
		}
		p.logf("volume %q created: %d MiB, blank", vol, p.req.SizeMiB)
		return nil
	}
	oi, err := p.info(origin)
	if err != nil {
		return fmt.Errorf("volume %q: origin %q: %w", vol, origin, err)
	}
	if size < oi.Size {
		return fmt.Errorf("volume %q: size %d MiB is smaller than its origin %q (%d MiB): give size >= %d MiB: %w",
			vol, p.req.SizeMiB, origin, oi.Size>>20, (oi.Size+(1<<20)-1)>>20, errs.ErrInvalid)
	}
	parent := origin
	if !oi.Snapshot {
		parent, err = p.originSnapshot(origin)
		if err != nil {
			return err
		}
	}
	err = p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Clone(ctx, parent, vol, size) })
	if err != nil {
		return err
	}
	p.logf("volume %q created: %d MiB, a clone of snapshot %q (%d MiB)", vol, p.req.SizeMiB, parent, oi.Size>>20)
	return nil
}

// originSnapshot snapshots volume origin for the new volume, as
// <VOL_NAME>.origin; one left by an earlier try of this create is used
// again.
func (p *provider) originSnapshot(origin string) (string, error) {
	vol := p.req.Volume
	snap := vol + originSuffix
	err := p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Snapshot(ctx, origin, snap) })
	if errors.Is(err, errs.ErrExists) {
		si, ierr := p.info(snap)
		if ierr != nil || !si.Snapshot {
			return "", fmt.Errorf("volume %q: origin %q is a volume; its snapshot would be %q, which is taken: %w", vol, origin, snap, err)
		}
		p.logf("volume %q: origin %q is a volume: cloning snapshot %q, left by an earlier create", vol, origin, snap)
		return snap, nil
	}
	if err != nil {
		return "", fmt.Errorf("volume %q: origin %q is a volume: snapshot it as %q: %w", vol, origin, snap, err)
	}
	p.logf("volume %q: origin %q is a volume: took its snapshot %q to clone (removed with the volume)", vol, origin, snap)
	return snap, nil
}
