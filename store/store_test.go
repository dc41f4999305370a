package store_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

func TestValidName(t *testing.T) {
	good := []string{"a", "obj.0001", ".hidden", "...", "with space", "ünïcode", strings.Repeat("x", store.MaxNameLen)}
	for _, name := range good {
		if err := store.ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", name, err)
		}
	}
	bad := []string{"", ".", "..", "a/b", "/", "a\x00b", strings.Repeat("x", store.MaxNameLen+1)}
	for _, name := range bad {
		if err := store.ValidName(name); !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("ValidName(%.20q) = %v, want ErrInvalid", name, err)
		}
	}
}

func TestValidOwner(t *testing.T) {
	for _, owner := range []string{"a", "host-1:pid 42", strings.Repeat("o", store.MaxNameLen)} {
		if err := store.ValidOwner(owner); err != nil {
			t.Errorf("ValidOwner(%q) = %v, want nil", owner, err)
		}
	}
	for _, owner := range []string{"", "a\nb", "a\x00", strings.Repeat("o", store.MaxNameLen+1)} {
		if err := store.ValidOwner(owner); !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("ValidOwner(%.20q) = %v, want ErrInvalid", owner, err)
		}
	}
}

func TestValidRange(t *testing.T) {
	tests := []struct {
		off  int64
		n    int
		good bool
	}{
		{0, 0, true},
		{0, 4096, true},
		{1 << 40, 1 << 20, true},
		{-1, 1, false},
		{1<<63 - 1, 1, false},
		{1<<63 - 11, 10, true},
	}
	for _, tt := range tests {
		err := store.ValidRange(tt.off, tt.n)
		if tt.good && err != nil || !tt.good && !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("ValidRange(%d, %d) = %v, want good=%v", tt.off, tt.n, err, tt.good)
		}
	}
}

func TestLockedError(t *testing.T) {
	var err error = fmt.Errorf("volume v1: %w", &store.LockedError{Name: "v1", Owner: "host-a"})
	if !errors.Is(err, errs.ErrLocked) {
		t.Errorf("errors.Is(%v, ErrLocked) = false", err)
	}
	if errors.Is(err, errs.ErrNotOwner) {
		t.Errorf("errors.Is(%v, ErrNotOwner) = true", err)
	}
	var le *store.LockedError
	if !errors.As(err, &le) || le.Owner != "host-a" || le.Name != "v1" {
		t.Fatalf("errors.As(%v) = %+v", err, le)
	}
	if got, want := le.Error(), `lock "v1" held by "host-a"`; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
	if errs.ToCode(err) != errs.CodeLocked {
		t.Errorf("ToCode = %v, want CodeLocked", errs.ToCode(err))
	}
}
