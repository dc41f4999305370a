package testbin

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/xseg"
)

// Segment creates a segment (16 ports, dynamic from 8) named after prefix
// and the test, destroyed at cleanup after recovering what dead processes
// left and checking its invariants (every ring and buffer accounted for).
func Segment(t testing.TB, prefix string, sizeMiB int) *xseg.Segment {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	if len(name) > 200 {
		name = name[:200]
	}
	xseg.Destroy(name)
	s, err := xseg.Create(xseg.Config{Name: name, SizeMiB: sizeMiB, Ports: 16, DynPorts: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Recover()
		if err := s.Check(); err != nil {
			t.Error(err)
		}
		s.Close()
		xseg.Destroy(name)
	})
	return s
}
