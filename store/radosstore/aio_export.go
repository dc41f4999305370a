//go:build ceph

package radosstore

// The completion callback of aio.go, in a file of its own: a file with
// //export may only declare C in its preamble.

/*
#include <stdint.h>
*/
import "C"

import "runtime/cgo"

//export goRadosAioDone
func goRadosAioDone(h C.uintptr_t, ret C.int) {
	hd := cgo.Handle(h)
	fn := hd.Value().(func(int))
	hd.Delete()
	fn(int(ret))
}
