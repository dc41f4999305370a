package main

// verify checks that this host can serve the provider: the configuration
// loads, vlmcd answers, vlmc (the map daemon) is found and volumes can be
// mapped here (FUSE and loop devices). Ganeti never calls it; it is for
// the operator.
//
// Example:
//
//	$ /usr/share/ganeti/extstorage/archipelago/verify

import (
	"context"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/mapdev"
	"github.com/archipelago-go/archipelago/volclient"
)

func (p *provider) verify() error {
	if err := p.call(func(ctx context.Context, vc *volclient.Client) error { return vc.Ping(ctx) }); err != nil {
		return err
	}
	vlmc, err := findVlmc()
	if err != nil {
		return err
	}
	if err := mapdev.Available(); err != nil {
		return err
	}
	nbd := "no nbd_endpoint role: no kvm: URIs for access=userspace"
	if eps := p.cfg.RolesOfType(config.TypeNBDEndpoint); len(eps) > 0 {
		nbd = "NBD URIs on " + eps[0].Socket
	}
	p.logf("%s: vlmcd answers; HOST_ID %s; map daemon %s; %s", orDefault(p.cfg.Path), p.cfg.HostID, vlmc, nbd)
	return nil
}
