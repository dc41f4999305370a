// Command filed is the file blocker: it serves the objects of the segment's
// requests as files under a directory, with persistent locks. Run
// filed --help for its options; archipelago start runs it for the roles of
// type file_blocker.
package main

import (
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/roles"
)

func main() {
	if err := roles.Filed().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
