package mapper

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestFileIntents: what Begin wrote is pending for the next process (a
// mapperd started after a kill); what End removed is not; an operation
// begun twice on one name stays pending until both end.
func TestFileIntents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mapperd.intents")
	a, err := NewFileIntents(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"v1", "v2", "v2", "v3"} {
		if err := a.Begin(n); err != nil {
			t.Fatal(err)
		}
	}
	a.End("v1")
	a.End("v2")
	a.End("nope")
	b, err := NewFileIntents(path) // the next process
	if err != nil {
		t.Fatal(err)
	}
	got, _ := b.Pending()
	if want := []string{"v2", "v3"}; !slices.Equal(got, want) {
		t.Fatalf("pending after a restart: %v, want %v", got, want)
	}
	b.End("v2")
	b.End("v3")
	c, _ := NewFileIntents(path)
	if got, _ := c.Pending(); len(got) != 0 {
		t.Fatalf("pending after every end: %v", got)
	}
}
