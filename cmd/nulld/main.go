// Command nulld: see cli.Nulld.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Nulld().Execute(); err != nil {
		peer.Fatal(err)
	}
}
