package testutil

import (
	"fmt"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// Every sentinel with a wire code has a name: a new one added to errs
// without a name here would print as "other" in golden output.
func TestErrNameNamesEverySentinel(t *testing.T) {
	seen := map[string]bool{}
	for c := errs.CodeOK + 1; errs.ToCode(errs.FromCode(c)) == c; c++ {
		err := fmt.Errorf("object %q: %w", "x", errs.FromCode(c))
		name := ErrName(err)
		if name == "other" || seen[name] {
			t.Errorf("code %d (%v) is named %q", c, errs.FromCode(c), name)
		}
		seen[name] = true
	}
	if len(seen) < 18 {
		t.Errorf("only %d sentinels checked", len(seen))
	}
	if got := ErrName(fmt.Errorf("plain")); got != "other" {
		t.Errorf("ErrName of an error wrapping no sentinel = %q", got)
	}
}
