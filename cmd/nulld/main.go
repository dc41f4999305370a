// Command nulld is the null peer: it answers every request at once with
// success, for benchmarks and tests of the segment itself. It links only
// the peer runtime. Run nulld --help for its options.
package main

import "github.com/archipelago-go/archipelago/internal/daemon"

func main() {
	if err := nulldCommand().Execute(); err != nil {
		daemon.Fatal(err)
	}
}
