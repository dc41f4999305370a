// Command vlmc manages volumes: see cli.Vlmc.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Vlmc().Execute(); err != nil {
		peer.Fatal(err)
	}
}
