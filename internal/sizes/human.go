package sizes

import (
	"math"
	"strconv"
)

// Human prints n bytes for a reader, in the largest unit not above it
// (powers of 1024), with one decimal below 10 units and rounded to the
// nearest otherwise: "0B", "1023B", "1.5K", "4M" (exact multiples print
// no decimal), "812M", "1.2T". It is not exact (Format is, and Parse
// reads Format's output back): for tables such as vlmc du's.
func Human(n uint64) string {
	for _, u := range units {
		b := uint64(1) << u.shift
		if n < b {
			continue
		}
		if n%b == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + string(u.letter)
		}
		v := float64(n) / float64(b)
		if r := math.Round(v*10) / 10; r < 10 {
			return strconv.FormatFloat(r, 'f', 1, 64) + string(u.letter)
		}
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64) + string(u.letter)
	}
	return strconv.FormatUint(n, 10) + "B"
}
