package main

// detach unmaps the volume; without a mapping it does nothing. It prints
// nothing on stdout.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 detach
func (p *provider) detach() error {
	unlock, err := p.lockVolume()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := p.unmapAll()
	if err == nil && n == 0 {
		p.logf("volume %q is not mapped here: nothing to do", p.req.Volume)
	}
	return err
}
