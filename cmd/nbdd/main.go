// Command nbdd is the block endpoint: it serves every volume by name over
// NBD (nbdexport.Run); nbdd.go holds its flags.
package main

import "github.com/archipelago-go/archipelago/internal/daemon"

func main() {
	if err := nbddCmd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
