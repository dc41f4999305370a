package testutil

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RunLimit bounds a program that RunErr, Run, QemuIO or a QemuSession's
// command runs: one that hangs (e.g. waiting for a lock nobody gives back)
// fails the test instead of hanging it.
const RunLimit = 2 * time.Minute

// debianPackage names the package that brings an outside program the
// tests use, for the message of a skip.
var debianPackage = map[string]string{
	"qemu-io": "qemu-utils", "qemu-img": "qemu-utils",
	"nbdinfo": "libnbd-bin", "nbdcopy": "libnbd-bin",
	"mkfs.ext4": "e2fsprogs", "e2fsck": "e2fsprogs",
	"mount": "mount", "umount": "mount",
	"losetup": "util-linux", "blockdev": "util-linux",
	"chattr": "e2fsprogs", "dd": "coreutils",
}

// NeedBinaries skips the test, naming the program and the Debian package
// that has it, unless every one of names is on $PATH.
func NeedBinaries(t testing.TB, names ...string) {
	t.Helper()
	if err := missing(names); err != nil {
		t.Skipf("%v: skipping", err)
	}
}

// RequireBinaries is NeedBinaries for a test that must not be skipped
// where it can run: it fails the test instead.
func RequireBinaries(t testing.TB, names ...string) {
	t.Helper()
	if err := missing(names); err != nil {
		t.Fatal(err)
	}
}

func missing(names []string) error {
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if p, ok := debianPackage[n]; ok {
				return fmt.Errorf("%s not installed (apt-get install %s)", n, p)
			}
			return fmt.Errorf("%s not installed", n)
		}
	}
	return nil
}

// RunErr runs an outside program for at most RunLimit and returns its
// combined output. (Not bound to t.Context(): that ends before the test's
// cleanups, which may run programs too.)
func RunErr(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), RunLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("no answer in %v: %w (%v)", RunLimit, ctx.Err(), err)
	}
	return string(out), err
}

// Run is RunErr that fails the test, with the command line and its output,
// when the program fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}
