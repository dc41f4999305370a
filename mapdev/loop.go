package mapdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/errs"
)

// Attach attaches file to a free loop device with direct I/O (read-only
// if asked) and returns the device's path, e.g. /dev/loop3. It runs
// losetup(8).
func Attach(ctx context.Context, file string, readOnly bool) (string, error) {
	args := []string{"--find", "--show", "--direct-io=on"}
	if readOnly {
		args = append(args, "--read-only")
	}
	args = append(args, file)
	out, err := losetup(ctx, args...)
	if err != nil {
		return "", fmt.Errorf("attach %s to a loop device: %w", file, err)
	}
	dev := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("attach %s: losetup printed %q, not a loop device: %w", file, dev, errs.ErrIO)
	}
	return dev, nil
}

// Detach detaches a loop device (losetup -d). The kernel lets go of the
// backing file once the last opener of the device closes it.
func Detach(ctx context.Context, dev string) error {
	if _, err := losetup(ctx, "-d", dev); err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

func losetup(ctx context.Context, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "losetup", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("losetup %s: %s: %w", strings.Join(args, " "), msg, err)
		}
		return nil, fmt.Errorf("losetup %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// sysLoop is the sysfs directory of a loop device's attachment.
func sysLoop(dev string) string {
	return filepath.Join("/sys/block", filepath.Base(dev), "loop")
}

// Backing returns the file a loop device is attached to; "" if it is not
// attached (or is no loop device).
func Backing(dev string) string {
	b, err := os.ReadFile(filepath.Join(sysLoop(dev), "backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// LoopsOf returns the loop devices attached to file (its canonical path).
func LoopsOf(file string) []string {
	paths, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == file {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return out
}

// DeviceSize returns a block device's size in bytes, as the kernel has it
// now (/sys/block/<dev>/size, in 512-byte sectors: what `blockdev
// --getsize64` prints).
func DeviceSize(dev string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %q: %w", dev, b, errs.ErrCorrupt)
	}
	return n * 512, nil
}

// SetCapacity makes a loop device take its backing file's size as the
// kernel knows it now (ioctl LOOP_SET_CAPACITY, as `losetup -c`): the
// device grows without a detach. The backing file's size must be up to
// date in the kernel first (Server.Resized for a mapped file).
func SetCapacity(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("set the capacity of %s: %w", dev, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("set the capacity of %s (LOOP_SET_CAPACITY): %w", dev, err)
	}
	return nil
}

// AttachedTo reports whether loop device dev is attached to the file fi
// describes (os.Stat of it): the same filesystem and inode, whatever
// path the file has now (Backing shows none that can be opened once its
// filesystem was unmounted lazily).
func AttachedTo(dev string, fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	f, err := os.Open(dev)
	if err != nil {
		return false
	}
	defer f.Close()
	li, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	return err == nil && li.Device == uint64(st.Dev) && li.Inode == st.Ino
}

// DirectIO reports whether an attached loop device does direct I/O on
// its backing file.
func DirectIO(dev string) bool {
	b, err := os.ReadFile(filepath.Join(sysLoop(dev), "dio"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// InUse reports whether a block device is held exclusively: mounted, or
// part of a device-mapper or md device. Detaching such a loop device
// would only mark it for detaching when its user lets go.
func InUse(dev string) (bool, error) {
	fd, err := syscall.Open(dev, syscall.O_RDONLY|syscall.O_EXCL|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", dev, err)
	}
	syscall.Close(fd)
	return false, nil
}

// Available says why mapping cannot work on this machine: nil if FUSE
// and loop devices are there and usable (root, /dev/fuse, loop-control,
// losetup).
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("mapping volumes needs root (mounts FUSE, attaches loop devices): %w", errs.ErrNotSupported)
	}
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("mapping volumes needs %s: %w", p, errs.ErrNotSupported)
		}
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("mapping volumes needs losetup (util-linux): %w", errs.ErrNotSupported)
	}
	return nil
}
