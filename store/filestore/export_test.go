package filestore

import (
	"io/fs"
	"os"
	"testing"
)

// RefuseDirect makes every O_DIRECT open fail with err until t ends, as
// on a filesystem that refuses O_DIRECT.
func RefuseDirect(t testing.TB, err error) {
	old := openDirect
	openDirect = func(path string) (*os.File, error) {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	t.Cleanup(func() { openDirect = old })
}
