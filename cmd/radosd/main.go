//go:build ceph

// Command radosd is the RADOS blocker: it serves the objects of the
// segment's requests as RADOS objects of a Ceph pool, with persistent
// locks. It needs librados: go build -tags ceph ./cmd/radosd. Run
// radosd --help for its options; archipelago start runs it for the roles
// of type rados_blocker.
package main

import (
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/roles"
)

func main() {
	if err := roles.Radosd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
