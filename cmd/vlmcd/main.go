// Command vlmcd is the volume composer: it serves volume READ and WRITE as
// parallel object I/O, after asking the mapper which objects cover the
// range. Run vlmcd --help for its options; archipelago start runs it for
// the role of type vlmcd.
package main

import (
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/roles"
)

func main() {
	if err := roles.Vlmcd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
