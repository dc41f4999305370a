package main

// snapshot takes a read-only snapshot of the volume named
// VOL_SNAPSHOT_NAME (Ganeti's default: <VOL_NAME>.snap; gnt-backup export
// of a running instance then attaches, reads, detaches and removes it as
// a volume). The snapshot has the volume's size.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 VOL_SNAPSHOT_NAME=0f1e2d3c.ext.disk0.snap snapshot

import (
	"context"

	"github.com/archipelago-go/archipelago/volclient"
)

func (p *provider) snapshot() error {
	vol, snap := p.req.Volume, p.req.Snapshot
	err := p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Snapshot(ctx, vol, snap) })
	if err != nil {
		return err
	}
	p.logf("volume %q: snapshot %q taken", vol, snap)
	return nil
}
