// Command nbdd is the block endpoint: see cli.Nbdd.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Nbdd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
