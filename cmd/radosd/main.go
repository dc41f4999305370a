//go:build ceph

// Command radosd: see cli.Radosd. It needs librados: go build -tags ceph.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Radosd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
