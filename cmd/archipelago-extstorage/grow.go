package main

// grow resizes the volume to VOL_NEW_SIZE MiB (Ganeti grows the disks of
// running instances: a device mapping the volume here shows the new size
// when grow returns, without a remap; mappings on other hosts follow
// within seconds). Ganeti never shrinks a disk; a smaller size fails.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 VOL_SIZE=10240 VOL_NEW_SIZE=20480 grow

import (
	"context"
	"fmt"

	"github.com/archipelago-go/archipelago/mapdev"
	"github.com/archipelago-go/archipelago/volclient"
)

func (p *provider) grow() error {
	vol, size := p.req.Volume, p.req.NewSizeMiB<<20
	err := p.call(func(ctx context.Context, vc *volclient.Client) error {
		return mapdev.Resize(ctx, p.cfg, vc, vol, size, false)
	})
	if err != nil {
		return err
	}
	from := ""
	if p.req.SizeMiB != 0 {
		from = fmt.Sprintf(" from %d MiB", p.req.SizeMiB)
	}
	p.logf("volume %q grown%s to %d MiB", vol, from, p.req.NewSizeMiB)
	return nil
}
