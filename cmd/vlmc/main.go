// Command vlmc manages volumes: see cli.Vlmc.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Vlmc().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
