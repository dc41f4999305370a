// Command nbdd is the block endpoint: see cli.Nbdd.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Nbdd().Execute(); err != nil {
		peer.Fatal(err)
	}
}
