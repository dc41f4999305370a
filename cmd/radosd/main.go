//go:build ceph

// Command radosd: see cli.Radosd. It needs librados: go build -tags ceph.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Radosd().Execute(); err != nil {
		peer.Fatal(err)
	}
}
