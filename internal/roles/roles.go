// Package roles holds the daemons' commands, one per role type of the
// configuration (filed, radosd, mapperd, vlmcd, nbdd), so that a program
// can run one of them — cmd/<prog> is a thin wrapper around its command —
// or several as goroutines of one process (cmd/archipelagod).
//
// A command runs until SIGTERM or SIGINT, as its program always did; run
// under a context made by daemon.WithHosted (cobra's ExecuteContext), it
// runs until that context ends instead, leaves what belongs to the process
// (GOMAXPROCS, signals, the CPU profile) to its host, names its role in
// its log lines, and tells the host when it serves (daemon.Ready).
package roles

import (
	"sort"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
)

// program is the daemon that serves a role type: its name and command.
type program struct {
	prog string
	cmd  func() *cobra.Command
}

// commands maps a role type to its program (radosd.go adds rados_blocker
// in the ceph build).
var commands = map[string]program{
	config.TypeFileBlocker: {"filed", Filed},
	config.TypeMapperd:     {"mapperd", Mapperd},
	config.TypeVlmcd:       {"vlmcd", Vlmcd},
	config.TypeNBDEndpoint: {"nbdd", Nbdd},
}

// ForType returns the program name and a new command of the daemon that
// serves roles of type typ; ok is false for a type no daemon of this build
// serves (rados_blocker without the ceph build tag).
func ForType(typ string) (prog string, cmd *cobra.Command, ok bool) {
	c, ok := commands[typ]
	if !ok {
		return "", nil, false
	}
	return c.prog, c.cmd(), true
}

// Types are the role types this build serves, sorted.
func Types() []string {
	var ts []string
	for t := range commands {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}
