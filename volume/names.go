package volume

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// Name limits. A volume name becomes the prefix of its objects' names
// (<name>_<16 hex>_m<level>_<16 hex> is the longest, 37 bytes more), so it
// must leave room within store.MaxNameLen. There is no other lower bound
// than one byte: every object name the engine derives from a volume name
// adds a suffix ("_lock", "_epoch", a data or map page form) that
// ValidName refuses at the end of a name, so a name of any length can be
// neither another volume's object nor the prefix of another's objects.
const (
	MinNameLen = 1
	MaxNameLen = store.MaxNameLen - 40
)

// Object name forms.
const (
	lockSuffix   = "_lock"
	epochSuffix  = "_epoch"
	legacyPrefix = "archip_"
)

// ValidName checks a volume name: MinNameLen to MaxNameLen bytes of
// UTF-8, printable characters only (no space, no control or invisible
// formatting character: a name is an NBD export name and one line of
// `vlmc list`), no '/', that collides with none of the engine's object
// forms: it must not start with "archip_" (the original's legacy maps),
// end in "_lock" or "_epoch", end in a data object form
// "_<16 hex>_<16 hex>" or a map page form "_<16 hex>_m<digit>_<16 hex>",
// or be 64 hex digits (a content-addressed object). The error wraps
// errs.ErrInvalid.
func ValidName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("volume name %q %s: %w", name, why, errs.ErrInvalid)
	}
	switch {
	case len(name) < MinNameLen:
		return bad("is empty")
	case len(name) > MaxNameLen:
		return bad(fmt.Sprintf("is longer than %d bytes", MaxNameLen))
	case !utf8.ValidString(name):
		return bad("is not valid UTF-8")
	}
	for i, r := range name {
		switch {
		case r == '/':
			return bad(fmt.Sprintf("holds a '/' (byte %d)", i))
		case unicode.IsControl(r):
			return bad(fmt.Sprintf("holds a control character %U (byte %d): names are printable", r, i))
		case unicode.IsSpace(r):
			return bad(fmt.Sprintf("holds a space %U (byte %d): names are one word", r, i))
		case !unicode.IsPrint(r):
			return bad(fmt.Sprintf("holds an invisible character %U (byte %d): names are printable", r, i))
		}
	}
	switch {
	case strings.HasPrefix(name, legacyPrefix):
		return bad("has the legacy prefix " + legacyPrefix)
	case strings.HasSuffix(name, lockSuffix):
		return bad("ends like a lock (" + lockSuffix + ")")
	case strings.HasSuffix(name, epochSuffix):
		return bad("ends like an epoch record (" + epochSuffix + ")")
	case len(name) == 64 && isHex(name):
		return bad("looks like a content-addressed object")
	case isDataForm(name) || isPageForm(name):
		return bad("looks like a data or map object name")
	}
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("volume name: %w", err)
	}
	return nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isDataForm: ends in _<16 hex>_<16 hex>.
func isDataForm(s string) bool {
	const n = 1 + 16 + 1 + 16
	if len(s) < n {
		return false
	}
	t := s[len(s)-n:]
	return t[0] == '_' && isHex(t[1:17]) && t[17] == '_' && isHex(t[18:])
}

// isPageForm: ends in _<16 hex>_m<digit>_<16 hex>.
func isPageForm(s string) bool {
	const n = 1 + 16 + 2 + 1 + 1 + 16
	if len(s) < n {
		return false
	}
	t := s[len(s)-n:]
	return t[0] == '_' && isHex(t[1:17]) && t[17] == '_' && t[18] == 'm' &&
		'0' <= t[19] && t[19] <= '9' && t[20] == '_' && isHex(t[21:])
}

// DataObject returns the name of the data object of block index of a
// volume with that prefix and epoch: <prefix>_<epoch>_<index>, 16 lower-case
// hex digits each, as the original named them.
func DataObject(prefix string, epoch, index uint64) string {
	return fmt.Sprintf("%s_%016x_%016x", prefix, epoch, index)
}

func pageObject(prefix string, epoch uint64, key pageKey) string {
	return fmt.Sprintf("%s_%016x_m%d_%016x", prefix, epoch, key.level, key.index)
}

func lockName(vol string) string  { return vol + lockSuffix }
func epochName(vol string) string { return vol + epochSuffix }
