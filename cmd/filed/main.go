// Command filed: see cli.Filed.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Filed().Execute(); err != nil {
		peer.Fatal(err)
	}
}
