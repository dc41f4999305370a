//go:build ceph

package radosstore

// Compound RADOS operations that go-ceph's WriteOp does not offer (it has no
// truncate step and refuses empty buffers). Each builds one write operation,
// runs it synchronously and releases it, so the buffers passed in are not
// kept after the call returns.

/*
#cgo LDFLAGS: -lrados
#include <stdlib.h>
#include <rados/librados.h>

// ar_truncate truncates object oid to size if it exists (-ENOENT if not),
// atomically: a missing object is never created.
static int ar_truncate(void *io, const char *oid, uint64_t size) {
	rados_write_op_t op = rados_create_write_op();
	if (op == NULL) {
		return -12; // ENOMEM
	}
	rados_write_op_assert_exists(op);
	rados_write_op_truncate(op, size);
	int ret = rados_write_op_operate(op, (rados_ioctx_t)io, oid, NULL, 0);
	rados_release_write_op(op);
	return ret;
}

// ar_write_full replaces the content of object oid (creating it) with the
// len bytes at buf, atomically; len may be 0.
static int ar_write_full(void *io, const char *oid, const char *buf, size_t len) {
	rados_write_op_t op = rados_create_write_op();
	if (op == NULL) {
		return -12; // ENOMEM
	}
	if (len == 0) {
		rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
		rados_write_op_truncate(op, 0);
	} else {
		rados_write_op_write_full(op, buf, len);
	}
	int ret = rados_write_op_operate(op, (rados_ioctx_t)io, oid, NULL, 0);
	rados_release_write_op(op);
	return ret;
}
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
)

// errnoError is a negative return code of librados.
type errnoError int

func (e errnoError) Error() string {
	return fmt.Sprintf("rados: ret=%d, %v", int(e), syscall.Errno(-e))
}

// ErrorCode returns the negative errno, like go-ceph's errors.
func (e errnoError) ErrorCode() int { return int(e) }

func retErr(ret C.int) error {
	if ret >= 0 {
		return nil
	}
	return errnoError(ret)
}

// truncateExisting truncates oid to size; ENOENT if it does not exist.
func truncateExisting(io *rados.IOContext, oid string, size uint64) error {
	coid := C.CString(oid)
	defer C.free(unsafe.Pointer(coid))
	return retErr(C.ar_truncate(io.Pointer(), coid, C.uint64_t(size)))
}

// writeFull replaces oid's content with data (which may be empty).
func writeFull(io *rados.IOContext, oid string, data []byte) error {
	coid := C.CString(oid)
	defer C.free(unsafe.Pointer(coid))
	var buf *C.char
	if len(data) > 0 {
		buf = (*C.char)(unsafe.Pointer(&data[0]))
	}
	return retErr(C.ar_write_full(io.Pointer(), coid, buf, C.size_t(len(data))))
}
