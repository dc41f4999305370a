// Command nbdd is the block endpoint: it serves every volume by name over
// NBD (nbdexport.Run); internal/roles (roles.Nbdd) holds its flags.
package main

import (
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/roles"
)

func main() {
	if err := roles.Nbdd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
