// Command nulld: see cli.Nulld.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Nulld().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
