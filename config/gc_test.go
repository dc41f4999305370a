package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// TestGCInterval: GC_INTERVAL is off (0) by default, read as a duration,
// kept by Format and Parse, and a bad value is refused naming the line.
func TestGCInterval(t *testing.T) {
	if d := Default().GCInterval; d != 0 {
		t.Errorf("default GC_INTERVAL = %v, want 0 (never)", d)
	}
	for text, want := range map[string]time.Duration{
		"[ARCHIPELAGO]\nGC_INTERVAL = 24h\n":               24 * time.Hour,
		"[ARCHIPELAGO]\ngc_interval = 1h30m  # off-peak\n": 90 * time.Minute,
		"[ARCHIPELAGO]\nGC_INTERVAL = 0\n":                 0,
		"[ARCHIPELAGO]\nGC_INTERVAL = 2s\n":                2 * time.Second,
	} {
		c := mustParse(t, text)
		if c.GCInterval != want {
			t.Errorf("%q: GCInterval %v, want %v", text, c.GCInterval, want)
		}
		back := mustParse(t, c.Format())
		if back.GCInterval != want {
			t.Errorf("%q: after Format and Parse %v, want %v\n%s", text, back.GCInterval, want, c.Format())
		}
	}
	for text, want := range map[string]string{
		"[ARCHIPELAGO]\n\nGC_INTERVAL = 3600\n": "t.conf:3: [ARCHIPELAGO] GC_INTERVAL = 3600: not a duration (a number with a unit: 90s, 30m, 24h; 0 for never)",
		"[ARCHIPELAGO]\nGC_INTERVAL = -1h\n":    "t.conf:2: [ARCHIPELAGO] GC_INTERVAL = -1h: negative",
		"[ARCHIPELAGO]\nGC_INTERVAL = 10ms\n":   "t.conf:2: [ARCHIPELAGO] GC_INTERVAL = 10ms: must be at least 1s (or 0 for never)",
		"[ARCHIPELAGO]\nGC_INTERVAL = daily\n":  "t.conf:2: [ARCHIPELAGO] GC_INTERVAL = daily: not a duration",
	} {
		_, err := Parse("t.conf", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one error %q", text, err, want)
		}
	}
}
