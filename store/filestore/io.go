package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"unsafe"

	"github.com/archipelago-go/archipelago/errs"
)

// DirectAlign is the alignment of offset, length and buffer address that an
// I/O needs to go through O_DIRECT.
const DirectAlign = 4096

// aligned reports whether an I/O of p at off may use O_DIRECT.
func aligned(p []byte, off int64) bool {
	return len(p) > 0 && off%DirectAlign == 0 && len(p)%DirectAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%DirectAlign == 0
}

// pick returns the file for an I/O of p at off.
func (s *Store) pick(h *handle, p []byte, off int64) vfile {
	if h.d != nil && aligned(p, off) {
		s.stats.directIO.Add(1)
		return h.d
	}
	return h.f
}

// pread reads into p at off until p is full or the file ends.
func (s *Store) pread(h *handle, p []byte, off int64) (int, error) {
	if h.d == nil {
		return h.f.Pread(p, off)
	}
	n := 0
	for n < len(p) {
		// Picked anew each round: after a short O_DIRECT read the rest
		// is unaligned and goes through the page cache.
		m, err := s.pick(h, p[n:], off+int64(n)).Pread(p[n:], off+int64(n))
		n += m
		if err != nil || m == 0 {
			return n, err
		}
	}
	return n, nil
}

// pwrite writes all of p at off.
func (s *Store) pwrite(h *handle, p []byte, off int64) error {
	return s.pick(h, p, off).Pwrite(p, off)
}

// fdatasync flushes f's data and the metadata needed to read it back.
func (s *Store) fdatasync(f vfile) error {
	if s.fault != nil {
		if err := s.fault("fdatasync", f.Name()); err != nil {
			return &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
	}
	if err := f.Datasync(); err != nil {
		return err
	}
	s.stats.fileSyncs.Add(1)
	return nil
}

// alignedBuffer returns n zero bytes at an address aligned to DirectAlign.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+DirectAlign)
	skip := (DirectAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%DirectAlign)) % DirectAlign
	return b[skip : skip+n : skip+n]
}

// probeDirect checks that files in dir take O_DIRECT opens and I/O.
func probeDirect(dir string) error {
	f, err := createTemp(osFS{}, dir)
	if err != nil {
		return ioErr(err)
	}
	defer osFS{}.Unlink(f.Name())
	defer f.Close()
	d, err := openDirect(f.Name())
	if err != nil {
		return directErr(err)
	}
	defer d.Close()
	buf := alignedBuffer(DirectAlign)
	if _, err := d.WriteAt(buf, 0); err != nil {
		return directErr(err)
	}
	if _, err := d.ReadAt(buf, 0); err != nil {
		return directErr(err)
	}
	return nil
}

func directErr(err error) error {
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%w: %w", errs.ErrNotSupported, err)
	}
	return ioErr(err)
}

// ioErr wraps a system error into the sentinel of its kind.
func ioErr(err error) error {
	switch {
	case errors.Is(err, errs.ErrShutdown), errors.Is(err, errs.ErrCorrupt),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", errs.ErrNotFound, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", errs.ErrNoSpace, err)
	default:
		return fmt.Errorf("%w: %w", errs.ErrIO, err)
	}
}

// opErr wraps err of operation op on an object.
func opErr(op, name string, err error) error {
	return fmt.Errorf("filestore: %s object %q: %w", op, name, ioErr(err))
}
