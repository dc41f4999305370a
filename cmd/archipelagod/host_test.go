package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/daemon"
)

// fakes are roles whose commands serve nothing: each says it serves
// (unless told to fail first) and runs until its context ends or it is
// told to fail. They stand for the roles' failures that a real peer does
// not produce on demand (a listener that breaks while it runs).
type fakes struct {
	mu      sync.Mutex
	stopped []string // the roles whose context ended, in that order
	serving chan string
	fail    map[string]chan error // a role returns what it gets here
	early   map[string]error      // a role that fails before it serves
}

func newFakes(names ...string) (*fakes, []*hostedRole) {
	f := &fakes{serving: make(chan string, len(names)), fail: map[string]chan error{}, early: map[string]error{}}
	var hs []*hostedRole
	for _, n := range names {
		f.fail[n] = make(chan error, 1)
		hs = append(hs, &hostedRole{name: n, prog: "fake", args: []string{}, cmd: &cobra.Command{
			Use: n, SilenceErrors: true, SilenceUsage: true,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ctx := cmd.Context()
				if h := daemon.HostedOf(ctx); h == nil || h.Role != n {
					return errors.New("not run hosted under its own name")
				}
				if err := f.early[n]; err != nil {
					return err
				}
				daemon.Ready(ctx)
				f.serving <- n
				select {
				case <-ctx.Done():
					f.mu.Lock()
					f.stopped = append(f.stopped, n)
					f.mu.Unlock()
					return nil
				case err := <-f.fail[n]:
					return err
				}
			},
		}})
	}
	return f, hs
}

func (f *fakes) stoppedOrder() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.stopped)
}

func runHost(ctx context.Context, hs []*hostedRole) chan error {
	done := make(chan error, 1)
	go func() { done <- host(ctx, slog.New(slog.DiscardHandler), hs) }()
	return done
}

func wait(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("host did not return")
		return nil
	}
}

// TestHostStopsInReverse: at the end of the host's context (a signal) the
// roles stop in the reverse order of their start, and host returns nil
// (exit 0).
func TestHostStopsInReverse(t *testing.T) {
	f, hs := newFakes("a", "b", "c")
	ctx, cancel := context.WithCancel(context.Background())
	done := runHost(ctx, hs)
	for _, want := range []string{"a", "b", "c"} {
		if got := <-f.serving; got != want {
			t.Fatalf("%s served before %s", got, want)
		}
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if got := f.stoppedOrder(); !slices.Equal(got, []string{"c", "b", "a"}) {
		t.Errorf("stopped in the order %v, want c b a", got)
	}
}

// TestHostRoleFailsWhileRunning: a role that returns while it runs makes
// the host stop the others, in reverse, and fail naming it (exit 1: its
// supervisor starts it again).
func TestHostRoleFailsWhileRunning(t *testing.T) {
	f, hs := newFakes("a", "b", "c")
	done := runHost(context.Background(), hs)
	for range 3 {
		<-f.serving
	}
	f.fail["b"] <- errors.New("listener broke")
	err := wait(t, done)
	if err == nil || !strings.Contains(err.Error(), "role b (fake) stopped on its own: listener broke") {
		t.Fatalf("host returned %v", err)
	}
	if got := f.stoppedOrder(); !slices.Equal(got, []string{"c", "a"}) {
		t.Errorf("stopped in the order %v, want c a", got)
	}
}

// TestHostRoleFailsToStart: a role that fails before it serves makes the
// host stop those started before it and fail naming it; the roles after it
// never start.
func TestHostRoleFailsToStart(t *testing.T) {
	f, hs := newFakes("a", "b", "c")
	f.early["b"] = errors.New("port 2 is bound")
	err := wait(t, runHost(context.Background(), hs))
	if err == nil || !strings.Contains(err.Error(), "role b (fake) failed to start: port 2 is bound") {
		t.Fatalf("host returned %v", err)
	}
	if got := f.stoppedOrder(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("stopped %v, want a", got)
	}
	close(f.serving)
	var served []string
	for n := range f.serving {
		served = append(served, n)
	}
	if !slices.Equal(served, []string{"a"}) {
		t.Errorf("served %v, want a alone", served)
	}
}
