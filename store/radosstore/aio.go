//go:build ceph

package radosstore

// Asynchronous reads and writes with librados' aio calls: the blocker
// answers a READ or WRITE from the completion, so no thread waits per
// operation (synchronous calls cost radosd a blocked thread and two
// wake-ups per request).

/*
#cgo LDFLAGS: -lrados
#include <stdint.h>
#include <stdlib.h>
#include <rados/librados.h>

extern void goRadosAioDone(uintptr_t h, int ret);

static void ar_aio_cb(rados_completion_t c, void *arg) {
	int ret = rados_aio_get_return_value(c);
	rados_aio_release(c);
	goRadosAioDone((uintptr_t)arg, ret);
}

// ar_aio starts a read (write == 0) or a write of len bytes at buf, at off
// of oid. buf must stay valid until the completion; oid is copied.
static int ar_aio(void *io, const char *oid, char *buf, size_t len, uint64_t off, int write, uintptr_t h) {
	rados_completion_t c;
	int r = rados_aio_create_completion2((void *)h, ar_aio_cb, &c);
	if (r < 0) {
		return r;
	}
	if (write) {
		r = rados_aio_write((rados_ioctx_t)io, oid, c, buf, len, off);
	} else {
		r = rados_aio_read((rados_ioctx_t)io, oid, c, buf, len, off);
	}
	if (r < 0) {
		rados_aio_release(c);
	}
	return r;
}
*/
import "C"

import (
	"context"
	"fmt"
	"runtime/cgo"
	"unsafe"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// aio starts one operation; done gets librados' return value.
func (s *Store) aio(op, name string, p []byte, off int64, write bool, done func(ret int)) error {
	if err := store.ValidRange(off, len(p)); err != nil {
		return fmt.Errorf("radosstore: %s %q: %w", op, name, err)
	}
	if len(p) == 0 {
		return fmt.Errorf("radosstore: %s %q: no bytes: %w", op, name, errs.ErrInvalid)
	}
	if err := s.enterName(context.Background(), op, name); err != nil {
		return err
	}
	h := cgo.NewHandle(func(ret int) {
		defer s.ops.Done()
		done(ret)
	})
	coid := C.CString(name)
	defer C.free(unsafe.Pointer(coid))
	w := C.int(0)
	if write {
		w = 1
	}
	ret := C.ar_aio(s.io.Pointer(), coid, (*C.char)(unsafe.Pointer(unsafe.SliceData(p))), C.size_t(len(p)), C.uint64_t(off), w, C.uintptr_t(h))
	if ret < 0 {
		h.Delete()
		s.ops.Done()
		return opErr(op, name, errnoError(ret))
	}
	return nil
}

// ReadAsync reads into p at off of name and calls done with the bytes that
// came from the object (as ReadAt) or the error. p must stay untouched
// until then (a segment buffer, say: the cgo rules allow it since it is
// not Go memory).
func (s *Store) ReadAsync(name string, p []byte, off int64, done func(n int, err error)) error {
	return s.aio("read", name, p, off, false, func(ret int) {
		if ret < 0 {
			done(0, opErr("read", name, errnoError(ret)))
			return
		}
		done(ret, nil)
	})
}

// WriteAsync writes p at off of name and calls done when it is on stable
// storage.
func (s *Store) WriteAsync(name string, p []byte, off int64, done func(err error)) error {
	return s.aio("write", name, p, off, true, func(ret int) {
		if ret < 0 {
			done(opErr("write", name, errnoError(ret)))
			return
		}
		done(nil)
	})
}
