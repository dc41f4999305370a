package daemon

import (
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/peer"
)

// TestWaitFromEnv checks the environment's knobs as the programs read
// them: unset leaves the defaults (peer.Wait's zero value), 0 µs means no
// spin (not the default), and ARCHIPELAGO_DOORBELL forces either sleep.
func TestWaitFromEnv(t *testing.T) {
	for _, c := range []struct {
		spin, bell string
		want       peer.Wait
	}{
		{"", "", peer.Wait{}},
		{"50", "", peer.Wait{Spin: 50 * time.Microsecond}},
		{"0", "", peer.Wait{Spin: -1}},
		{"-3", "", peer.Wait{Spin: -1}},
		{"fast", "yes", peer.Wait{}},
		{"", "0", peer.Wait{Sleep: peer.SleepFutex}},
		{"7", "1", peer.Wait{Spin: 7 * time.Microsecond, Sleep: peer.SleepDoorbell}},
	} {
		t.Setenv(EnvSpin, c.spin)
		t.Setenv(EnvDoorbell, c.bell)
		if got := WaitFromEnv(); got != c.want {
			t.Errorf("%s=%q %s=%q: %+v, want %+v", EnvSpin, c.spin, EnvDoorbell, c.bell, got, c.want)
		}
	}
}
