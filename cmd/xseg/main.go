// Command xseg inspects and manages a segment: see cli.XsegTool.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.XsegTool().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
