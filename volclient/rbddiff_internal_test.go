package volclient

import (
	"slices"
	"testing"
)

// zeroRuns splits data read for a diff into data and zero runs at 4 KiB
// grains; a zero run shorter than 64 KiB between data stays data.
func TestZeroRuns(t *testing.T) {
	const k = 4096
	p := make([]byte, 1<<20)
	p[20*k+5] = 1 // data in grain 20
	p[30*k] = 1   // grain 30: 9 zero grains between, kept with the data
	p[200*k] = 1  // grain 200: 169 zero grains before, a run of its own
	want := []run{{0, 20 * k, true}, {20 * k, 31 * k, false}, {31 * k, 200 * k, true}, {200 * k, 201 * k, false}, {201 * k, 1 << 20, true}}
	if got := zeroRuns(p); !slices.Equal(got, want) {
		t.Errorf("zeroRuns = %v, want %v", got, want)
	}
	if got := zeroRuns(make([]byte, 5000)); !slices.Equal(got, []run{{0, 5000, true}}) {
		t.Errorf("zeroRuns of zeros = %v", got)
	}
	q := []byte{0, 0, 7}
	if got := zeroRuns(q); !slices.Equal(got, []run{{0, 3, false}}) {
		t.Errorf("zeroRuns of a short piece = %v", got)
	}
}
