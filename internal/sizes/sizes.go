// Package sizes reads and prints the sizes the operator types (vlmc
// --size): the one parser of sizes with units in the project.
//
// A size is a positive decimal whole number, optionally followed by a unit:
//
//	(none)            MiB, as in the original Archipelago (10240 = 10 GiB)
//	B                 bytes
//	K M G T P E       KiB MiB GiB TiB PiB EiB (powers of 1024)
//
// Unit letters are case-insensitive and may be followed by "B" or "iB"
// ("10G", "10GB", "10GiB", "10gib" are the same): every unit is binary,
// even written KB or GB, as qemu-img reads them. Nothing else is taken: no
// sign, no fraction, no space inside, no other letter. An unknown unit is
// an error, never a default (an unknown letter once meant MiB: "1E" made a
// volume 1 MiB).
package sizes

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/archipelago-go/archipelago/errs"
)

// units, largest first (Format picks the largest that divides).
var units = []struct {
	letter byte
	shift  uint
}{{'E', 60}, {'P', 50}, {'T', 40}, {'G', 30}, {'M', 20}, {'K', 10}}

// Help is the short form of the syntax, for flag usage and errors.
const Help = "a number of MiB, or with a unit B, K, M, G, T, P, E (powers of 1024, optionally written KB/KiB ...): 512M, 10G, 1T"

// Parse reads s (surrounding spaces ignored) as a number of bytes. The
// error names s and wraps errs.ErrInvalid, or errs.ErrTooLarge when the
// size does not fit in 64 bits.
func Parse(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	digits, unit := t[:i], t[i:]
	shift, ok := uint(20), true
	switch u := strings.ToUpper(unit); {
	case u == "":
	case u == "B":
		shift = 0
	default:
		ok = false
		for _, x := range units {
			if u[0] == x.letter && (len(u) == 1 || u[1:] == "B" || u[1:] == "IB") {
				shift, ok = x.shift, true
				break
			}
		}
	}
	if digits == "" || !ok {
		return 0, fmt.Errorf("size %q: want %s: %w", s, Help, errs.ErrInvalid)
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil { // only a range error is left: digits are digits
		return 0, fmt.Errorf("size %q: does not fit in 64 bits: %w", s, errs.ErrTooLarge)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: want a positive size: %w", s, errs.ErrInvalid)
	}
	hi, lo := bits.Mul64(n, 1<<shift)
	if hi != 0 {
		return 0, fmt.Errorf("size %q: does not fit in 64 bits: %w", s, errs.ErrTooLarge)
	}
	return lo, nil
}

// Format prints n bytes in the largest unit that divides it ("10G",
// "1536K"), else in bytes with the unit B ("4097B"): Parse reads any
// n > 0 back as n.
func Format(n uint64) string {
	for _, u := range units {
		if b := uint64(1) << u.shift; n >= b && n%b == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + string(u.letter)
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
