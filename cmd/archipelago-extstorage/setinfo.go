package main

// setinfo receives Ganeti's metadata for the volume (VOL_METADATA, the
// instance's name as Ganeti puts it, at most 128 characters of
// [-A-Za-z0-9_+.]). Archipelago volumes have no attribute to keep it in,
// so setinfo checks that the volume exists and writes the metadata to its
// log line, which Ganeti keeps in
// /var/log/ganeti/extstorage/setinfo-archipelago-<VOL_NAME>-<time>.log.
//
// Example:
//
//	$ VOL_NAME=0f1e2d3c.ext.disk0 VOL_METADATA=originstname+vm1.example.org setinfo

func (p *provider) setinfo() error {
	vol := p.req.Volume
	if _, err := p.info(vol); err != nil {
		return err
	}
	p.logf("volume %q: metadata %q (logged only: volumes keep no metadata)", vol, p.req.Metadata)
	return nil
}
