// Command vlmcd: see cli.Vlmcd.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Vlmcd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
