// Command xseg inspects and manages a segment: see cli.XsegTool.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/peer"
)

func main() {
	if err := cli.XsegTool().Execute(); err != nil {
		peer.Fatal(err)
	}
}
