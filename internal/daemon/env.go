package daemon

import (
	"os"
	"strconv"
	"time"

	"github.com/archipelago-go/archipelago/peer"
)

// The environment variables that tune the port loops of a program's peer
// and clients, for measurements (docs/xseg.md, "Waking without polling").
const (
	// EnvSpin is how long a port loop polls before it sleeps, in
	// microseconds (peer.DefaultSpin when unset; 0: no spin).
	EnvSpin = "ARCHIPELAGO_SPIN_US"
	// EnvDoorbell is "1" to make every port sleep on its doorbell, "0"
	// on the futex; unset, each program's own choice stands (the
	// doorbell for nbdd and clients, the futex for the other peers).
	EnvDoorbell = "ARCHIPELAGO_DOORBELL"
)

// WaitFromEnv returns the peer.Wait that EnvSpin and EnvDoorbell set (the
// zero value when they are unset or not numbers).
func WaitFromEnv() peer.Wait {
	var w peer.Wait
	if us, err := strconv.Atoi(os.Getenv(EnvSpin)); err == nil {
		w.Spin = time.Duration(us) * time.Microsecond
		if w.Spin <= 0 {
			w.Spin = -1 // no spin (the zero value is the default spin)
		}
	}
	switch os.Getenv(EnvDoorbell) {
	case "0":
		w.Sleep = peer.SleepFutex
	case "1":
		w.Sleep = peer.SleepDoorbell
	}
	return w
}

// ClientOptionsFromEnv returns the options of a program's client of the
// segment (peer.DialWith): the port loop's Wait from the environment.
func ClientOptionsFromEnv() peer.ClientOptions {
	return peer.ClientOptions{Wait: WaitFromEnv()}
}
