// Command mapperd is the mapper: it owns the volume maps and serves the
// volume operations (create, clone, snapshot, remove, rename, resize,
// info, list, open/close, lock/unlock) and the translation of volume
// ranges into objects. Run mapperd --help for its options; archipelago
// start runs it for the role of type mapperd.
package main

import (
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/roles"
)

func main() {
	if err := roles.Mapperd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
