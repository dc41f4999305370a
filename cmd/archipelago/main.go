// Command archipelago starts, stops and inspects the peers: see cli.Archipelago.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Archipelago().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
