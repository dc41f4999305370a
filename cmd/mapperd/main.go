// Command mapperd: see cli.Mapperd.
package main

import (
	"github.com/archipelago-go/archipelago/cli"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

func main() {
	if err := cli.Mapperd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
