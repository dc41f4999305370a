package daemon

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
)

// TestHostedLogger: a hosted role's lines name it once, those that name
// it themselves (the peer's "peer started") too; a role's own program
// adds nothing.
func TestHostedLogger(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	c := CommonFlags{LogLevel: 2}
	hosted := c.Logger(WithHosted(context.Background(), Hosted{Role: "blockerb"}))
	own := c.Logger(context.Background())
	os.Stderr = stderr
	hosted.Info("peer started", "role", "blockerb", "ports", "1..1")
	hosted.With("volume", "v").Info("opened", "role", "other")
	own.Info("alone")
	w.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{
		`msg="peer started" role=blockerb ports=1..1`,
		`msg=opened role=blockerb volume=v role=other`,
		`msg=alone`,
	}
	if len(lines) != len(want) {
		t.Fatalf("lines:\n%s", b)
	}
	for i, l := range lines {
		if !strings.HasSuffix(l, want[i]) {
			t.Errorf("line %d: %s\nwant it to end with %s", i, l, want[i])
		}
	}
}
