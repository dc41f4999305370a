// Command filed: see cli.Filed.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Filed().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
