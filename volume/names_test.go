package volume

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

func TestValidName(t *testing.T) {
	for _, name := range []string{
		"a", "ab", "vm1", "disk01", "Ünïcödé-név", "a#b;c%d", "x_lock2", "a_0123456789abcdef", "日本",
		strings.Repeat("n", MaxNameLen),
	} {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", name, err)
		}
	}
	for name, why := range map[string]string{
		"":                                       "empty",
		"new\nline":                              "control",
		"tab\there":                              "control",
		"nul\x00x":                               "control",
		"del\x7fx":                               "control",
		"c1\u0085x":                              "control",
		"bidi\u202ex":                            "invisible",
		"zero\u200bwidth":                        "invisible",
		"line\u2028sep":                          "space",
		"two words":                              "space",
		" lead":                                  "space",
		"nbsp\u00a0x":                            "space",
		"bad\xffutf8":                            "UTF-8",
		"a/b":                                    "'/'",
		"..":                                     "reserved",
		"archip_x":                               "legacy",
		"vol_lock":                               "lock",
		"vol_epoch":                              "epoch",
		strings.Repeat("a", 64):                  "content-addressed",
		"v_0123456789abcdef_0000000000000001":    "data or map",
		"v_0123456789abcdef_m1_0000000000000001": "data or map",
		strings.Repeat("n", MaxNameLen+1):        "longer",
	} {
		err := ValidName(name)
		if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), why) {
			t.Errorf("ValidName(%q) = %v, want an error wrapping ErrInvalid saying %q", name, err, why)
		}
	}
}

// TestShortNames: names shorter than 6 bytes (refused before for no
// reason) work like any other, and list alike beside longer names that
// start with them.
func TestShortNames(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, 4096)
	for _, n := range []string{"a", "a_1", "ab", "abc_0000000000000001"} {
		if err := v.e.Create(ctx, n, 1<<20); err != nil {
			t.Fatalf("create %q: %v", n, err)
		}
	}
	if err := writeVol(ctx, v.e, v.dataStore(), "a", 0, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := v.e.Snapshot(ctx, "a", "s"); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := v.e.List(ctx, func(n string) error { got = append(got, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "a_1", "ab", "abc_0000000000000001", "s"}; !slices.Equal(got, want) {
		t.Errorf("list %q, want %q", got, want)
	}
	for _, n := range []string{"a", "s"} {
		b, err := readVol(ctx, v.e, v.dataStore(), n, 0, 5)
		if err != nil || string(b) != "short" {
			t.Errorf("read %q: %q, %v", n, b, err)
		}
	}
}
