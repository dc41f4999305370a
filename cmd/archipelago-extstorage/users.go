package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// openers lists the processes that hold block device dev open (as fuser
// does: every /proc/<pid>/fd/* that is dev), as "pid N (comm)".
// mapdev.InUse sees only exclusive holders (a mount, device-mapper); a
// VM's QEMU opens the device without O_EXCL, and unmapping a device it
// holds would wait for it to let go. Processes that vanish or hide their
// descriptors meanwhile are skipped.
func openers(dev string) []string {
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return nil
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	var out []string
	for _, proc := range procs {
		pid, err := strconv.Atoi(filepath.Base(proc))
		if err != nil || pid == self {
			continue
		}
		fds, err := os.ReadDir(proc + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			var fst syscall.Stat_t
			if syscall.Stat(proc+"/fd/"+fd.Name(), &fst) != nil {
				continue
			}
			if fst.Mode&syscall.S_IFMT == syscall.S_IFBLK && fst.Rdev == st.Rdev {
				comm, _ := os.ReadFile(proc + "/comm")
				out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return out
}
