package config

import (
	"strings"
	"testing"
)

// TestFDCacheZero: fdcache = 0 is accepted and means no file kept open
// (filed opens the file for each I/O); a negative count is refused.
func TestFDCacheZero(t *testing.T) {
	c := mustParse(t, "[blockerb]\nfdcache = 0\n")
	r, ok := c.Role("blockerb")
	if !ok || r.FDCache != 0 {
		t.Fatalf("fdcache = 0: role %+v, %v", r, ok)
	}
	if r, _ := mustParse(t, "").Role("blockerb"); r.FDCache != 256 {
		t.Errorf("default fdcache %d, want 256", r.FDCache)
	}
	_, err := Parse("t.conf", []byte("[blockerb]\nfdcache = -1\n"))
	if err == nil || !strings.Contains(err.Error(), "t.conf:2: [blockerb] fdcache = -1: negative") {
		t.Errorf("fdcache = -1: %v", err)
	}
}
