package main

// attach maps the volume to a block device and tells Ganeti how to reach
// it. Ganeti calls it constantly (2 to 8 times per operation; it is its
// test that a disk exists), so it is idempotent and, once mapped, costs
// one question to vlmcd.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 EXTP_ACCESS=kernelspace attach
//	/dev/loop3
//	kvm:nbd+unix:///0f1e2d3c.ext.disk0?socket=/run/archipelago/nbd.sock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/mapdev"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
)

// EnvVlmc names the variable that says which vlmc runs the map daemon.
const EnvVlmc = "ARCHIPELAGO_VLMC"

// attach: line 1 the device (exactly, Ganeti stats it), then a kvm: line
// with the volume's NBD URI when the configuration has a block endpoint
// (used by Ganeti up to 3.0 for access=userspace disks). The map daemon
// logs to LOG_DIR/map-<id>.log, never to this program's stdout (Ganeti
// reads that until it closes).
func (p *provider) attach() error {
	vol := p.req.Volume
	unlock, err := p.lockVolume()
	if err != nil {
		return err
	}
	defer unlock()
	vi, err := p.info(vol)
	if err != nil {
		return err
	}
	dev, err := p.mapping()
	if err != nil {
		return err
	}
	if dev == "" {
		argv, err := p.mapCommand()
		if err != nil {
			return err
		}
		st, err := mapdev.Map(context.Background(), p.cfg, vol, mapdev.MapOptions{Command: argv, Timeout: opTimeout})
		if errors.Is(err, errs.ErrExists) {
			// Mapped meanwhile by hand (vlmc map): use that mapping.
			if dev, err = p.mapping(); err == nil && dev == "" {
				err = fmt.Errorf("volume %q: mapped elsewhere and gone again: %w", vol, errs.ErrBusy)
			}
		} else if err == nil {
			dev = st.Device
			kind := "volume"
			if vi.Snapshot {
				kind = "snapshot, read-only"
			}
			p.logf("volume %q (%s, %d MiB) mapped at %s (mapping %d, log %s)", vol, kind, vi.Size>>20, dev, st.ID, mapdev.LogFile(p.cfg, st.ID))
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintln(p.stdout, dev)
	if uri := p.uri(); uri != "" {
		fmt.Fprintln(p.stdout, "kvm:"+uri)
	} else if p.req.Access() == "userspace" {
		p.logf("volume %q: %s has no nbd_endpoint role: no kvm: URI for access=userspace", vol, orDefault(p.cfg.Path))
	}
	return nil
}

// mapping returns the device of the volume's live mapping on this host,
// "" if there is none. Mappings of the volume whose daemon died, or
// whose device was detached by hand, are cleaned up on the way.
func (p *provider) mapping() (string, error) {
	ms, err := p.mappings()
	if err != nil {
		return "", err
	}
	dev := ""
	for _, m := range ms {
		if m.Status == "mapped" && dev == "" {
			dev = m.Device
			continue
		}
		if m.Status == "mapped" {
			continue // mapped twice by hand: the first will do
		}
		p.logf("volume %q: mapping %d (%s) is %s: cleaning it up", p.req.Volume, m.ID, m.Device, m.Status)
		if err := mapdev.Unmap(context.Background(), p.cfg, strconv.Itoa(m.ID)); err != nil {
			return "", err
		}
	}
	return dev, nil
}

// mappings lists this host's mappings of the volume.
func (p *provider) mappings() ([]mapdev.Mapping, error) {
	all, err := mapdev.List(p.cfg)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", p.req.Volume, err)
	}
	var ms []mapdev.Mapping
	for _, m := range all {
		if m.Volume == p.req.Volume {
			ms = append(ms, m)
		}
	}
	return ms, nil
}

// unmapAll unmaps every mapping of the volume on this host; it fails
// with errs.ErrBusy for a device in use (mounted, or open by a VM).
func (p *provider) unmapAll() (int, error) {
	ms, err := p.mappings()
	if err != nil {
		return 0, err
	}
	for _, m := range ms {
		if err := p.unmap(m, ""); err != nil {
			return 0, err
		}
	}
	return len(ms), nil
}

// unmap undoes mapping m, unless a process holds its device open or it
// is mounted: then it fails at once with errs.ErrBusy, naming who (an
// unmap would wait a minute for the device to let go, and leave it
// marked for detaching). why, if given, ends the log line.
func (p *provider) unmap(m mapdev.Mapping, why string) error {
	if m.Status == "mapped" {
		users := mapdev.Openers(m.Device)
		if busy, _ := mapdev.InUse(m.Device); busy {
			users = append(users, "a mount or a device-mapper/md device")
		}
		if len(users) > 0 {
			return fmt.Errorf("volume %q: its device %s is in use by %s (does the instance still run on this host?): %w",
				p.req.Volume, m.Device, strings.Join(users, ", "), errs.ErrBusy)
		}
	}
	if err := mapdev.Unmap(context.Background(), p.cfg, strconv.Itoa(m.ID)); err != nil {
		return err
	}
	p.logf("volume %q: unmapped %s (mapping %d)%s", p.req.Volume, m.Device, m.ID, why)
	return nil
}

// uri is the volume's NBD URI at the configuration's first block
// endpoint (as `vlmc uri`), "" if it has none.
func (p *provider) uri() string {
	eps := p.cfg.RolesOfType(config.TypeNBDEndpoint)
	if len(eps) == 0 {
		return ""
	}
	return nbduri.URI(eps[0].Socket, p.req.Volume)
}

// mapCommand is the map daemon's command line: vlmc's map-serve with
// this installation's configuration file.
func (p *provider) mapCommand() ([]string, error) {
	vlmc, err := findVlmc()
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", p.req.Volume, err)
	}
	argv := []string{vlmc}
	if p.cfg.Path != "" {
		abs, err := filepath.Abs(p.cfg.Path)
		if err != nil {
			return nil, err
		}
		argv = append(argv, "--config", abs)
	}
	return append(argv, "map-serve", p.req.Volume), nil
}

// findVlmc locates vlmc: $ARCHIPELAGO_VLMC, else next to this program
// (links resolved), else on PATH, else /usr/bin/vlmc.
func findVlmc() (string, error) {
	if v := os.Getenv(EnvVlmc); v != "" {
		if _, err := exec.LookPath(v); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvVlmc, v, err)
		}
		return filepath.Abs(v)
	}
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			self = real
		}
		near := filepath.Join(filepath.Dir(self), "vlmc")
		if _, err := exec.LookPath(near); err == nil {
			return near, nil
		}
	}
	if v, err := exec.LookPath("vlmc"); err == nil {
		return filepath.Abs(v)
	}
	const installed = "/usr/bin/vlmc"
	if _, err := exec.LookPath(installed); err != nil {
		return "", fmt.Errorf("no vlmc to run the map daemon (set %s, or install archipelago): %w", EnvVlmc, errs.ErrNotFound)
	}
	return installed, nil
}
