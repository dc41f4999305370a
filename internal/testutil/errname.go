package testutil

import (
	"errors"

	"github.com/archipelago-go/archipelago/errs"
)

// sentinels in the order ErrName tries them: an error that wraps two
// (e.g. ErrIO and ErrCorrupt) is named after the first.
var sentinels = []struct {
	err  error
	name string
}{
	{errs.ErrNotFound, "ErrNotFound"}, {errs.ErrExists, "ErrExists"},
	{errs.ErrLocked, "ErrLocked"}, {errs.ErrNotOwner, "ErrNotOwner"},
	{errs.ErrInvalid, "ErrInvalid"}, {errs.ErrReadOnly, "ErrReadOnly"},
	{errs.ErrTooLarge, "ErrTooLarge"}, {errs.ErrCorrupt, "ErrCorrupt"},
	{errs.ErrVersion, "ErrVersion"}, {errs.ErrIO, "ErrIO"}, {errs.ErrBusy, "ErrBusy"},
	{errs.ErrFenced, "ErrFenced"}, {errs.ErrNoSpace, "ErrNoSpace"},
	{errs.ErrPeerDied, "ErrPeerDied"}, {errs.ErrNoPeer, "ErrNoPeer"},
	{errs.ErrPortBusy, "ErrPortBusy"}, {errs.ErrShutdown, "ErrShutdown"},
	{errs.ErrNotSupported, "ErrNotSupported"},
}

// ErrName names the errs sentinel that err wraps ("ErrNotFound"), for
// golden output and messages; "nil" for nil and "other" for an error that
// wraps none.
func ErrName(err error) string {
	if err == nil {
		return "nil"
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "other"
}
