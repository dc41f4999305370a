// Command vlmcd: see cli.Vlmcd.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.Vlmcd().Execute(); err != nil {
		peer.Fatal(err)
	}
}
