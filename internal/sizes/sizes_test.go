package sizes

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"1", 1 << 20}, {"10240", 10 << 30}, {" 512 ", 512 << 20},
		{"4096B", 4096}, {"1b", 1},
		{"1K", 1 << 10}, {"1k", 1 << 10}, {"1KB", 1 << 10}, {"1KiB", 1 << 10}, {"1kib", 1 << 10},
		{"512M", 512 << 20}, {"10G", 10 << 30}, {"10GB", 10 << 30}, {"10GiB", 10 << 30},
		{"1T", 1 << 40}, {"1P", 1 << 50}, {"1E", 1 << 60}, {"1EiB", 1 << 60}, {"15E", 15 << 60},
		{"017M", 17 << 20},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// TestParseRefuses: every input below was read as some size before (an
// unknown unit letter was dropped, so "1E" and "5X" were MiB).
func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"", errs.ErrInvalid}, {"G", errs.ErrInvalid}, {"0", errs.ErrInvalid}, {"0G", errs.ErrInvalid},
		{"5X", errs.ErrInvalid}, {"1Z", errs.ErrInvalid}, {"1Y", errs.ErrInvalid}, {"10GX", errs.ErrInvalid},
		{"10I", errs.ErrInvalid}, {"10IB", errs.ErrInvalid}, {"10iB", errs.ErrInvalid}, {"10BB", errs.ErrInvalid},
		{"10Gi", errs.ErrInvalid}, {"10 G", errs.ErrInvalid}, {"-1", errs.ErrInvalid}, {"+1", errs.ErrInvalid},
		{"1.5G", errs.ErrInvalid}, {"0x10", errs.ErrInvalid}, {"1e3", errs.ErrInvalid},
		{"16E", errs.ErrTooLarge}, {"17592186044416M", errs.ErrTooLarge}, {"99999999999999999999", errs.ErrTooLarge},
		{"18446744073709551615K", errs.ErrTooLarge},
	} {
		got, err := Parse(tc.in)
		if !errors.Is(err, tc.want) {
			t.Errorf("Parse(%q) = %d, %v; want an error wrapping %v", tc.in, got, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
			t.Errorf("Parse(%q): error %q does not name the input", tc.in, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[uint64]string{
		1: "1B", 4097: "4097B", 1024: "1K", 1536 << 10: "1536K", 10 << 30: "10G", 1 << 60: "1E", 3 << 60: "3E",
		(1 << 20) + (1 << 10): "1025K",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

// FuzzParse: no input panics; every accepted input is a positive size
// that Format prints in a form Parse reads back to the same number; every
// refusal wraps ErrInvalid or ErrTooLarge and names the input.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1", "10G", "10GiB", "1E", "16E", "5X", "4096B", "1kib", " 7 ", "", "99999999999999999999", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if !errors.Is(err, errs.ErrInvalid) && !errors.Is(err, errs.ErrTooLarge) {
				t.Fatalf("Parse(%q): error %v wraps neither ErrInvalid nor ErrTooLarge", s, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("Parse(%q): error %q does not name the input", s, err)
			}
			return
		}
		if n == 0 {
			t.Fatalf("Parse(%q) = 0 without an error", s)
		}
		back, err := Parse(Format(n))
		if err != nil || back != n {
			t.Fatalf("Parse(%q) = %d, Format = %q, read back as %d, %v", s, n, Format(n), back, err)
		}
	})
}
