// Command mapperd: see cli.Mapperd.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Mapperd().Execute(); err != nil {
		peer.Fatal(err)
	}
}
