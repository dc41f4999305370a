package main

import (
	"fmt"
	"os"
)

// openInput opens what import and import-diff (what) read into volume
// name: the file src, or standard input for "-". total is the file's size
// for a progress bar, -1 when unknown (a pipe). The caller closes in
// (standard input included: nothing reads it after).
func openInput(what, name, src string) (in *os.File, total int64, err error) {
	in = os.Stdin
	if src != "-" {
		if in, err = os.Open(src); err != nil {
			return nil, 0, fmt.Errorf("%s into volume %q: %w", what, name, err)
		}
	}
	total = -1
	if st, err := in.Stat(); err == nil && st.Mode().IsRegular() {
		total = st.Size()
	}
	return in, total, nil
}
