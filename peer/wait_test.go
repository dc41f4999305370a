package peer_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// TestWaitSleep checks how ports sleep: a peer on the futex unless
// Options.Doorbell, a client on its doorbell, and Wait.Sleep overriding
// both; and that requests flow with each setting and with no spin.
func TestWaitSleep(t *testing.T) {
	s := newSegment(t, 16)
	for _, c := range []struct {
		name      string
		chosen    bool // Options.Doorbell
		w         peer.Wait
		peer, cli bool // sleeps on the doorbell
	}{
		{"default", false, peer.Wait{}, false, true},
		{"doorbell-chosen", true, peer.Wait{}, true, true},
		{"futex-forced", true, peer.Wait{Sleep: peer.SleepFutex}, false, false},
		{"doorbell-forced", false, peer.Wait{Sleep: peer.SleepDoorbell}, true, true},
		{"no-spin", false, peer.Wait{Spin: -1}, false, true},
		{"long-spin", false, peer.Wait{Spin: 50 * time.Microsecond}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := peer.Start(peer.Options{Role: "wait", Segment: s.Name(), PortStart: 1, PortEnd: 1, NrOps: 4, NrThreads: 1,
				Doorbell: c.chosen, Wait: c.w, Logger: slog.New(slog.DiscardHandler)}, peer.Null)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop()
			cl, err := peer.NewClientWith(s, peer.ClientOptions{Wait: c.w})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for _, port := range []struct {
				no   int
				want bool
			}{{1, c.peer}, {cl.Port(), c.cli}} {
				st, err := s.PortStat(port.no)
				if err != nil {
					t.Fatal(err)
				}
				if st.Doorbell != port.want {
					t.Errorf("port %d sleeps on the doorbell: %v, want %v", port.no, st.Doorbell, port.want)
				}
			}
			for range 3 {
				// Let both loops go to sleep, then wake them.
				time.Sleep(2 * time.Millisecond)
				if err := call(t, cl, xseg.OpPing, 1, 0); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
