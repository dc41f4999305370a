package mapdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Openers lists the processes that hold block device dev open, as fuser
// does (every /proc/<pid>/fd/* that is dev), each as "pid N (comm)".
// InUse sees only exclusive holders (a mount, device-mapper); a VM's QEMU
// or a dd opens the device without O_EXCL, and detaching a device such a
// process holds only detaches it lazily: the loop device and the map
// daemon would stay until it lets go. Processes that vanish or hide their
// descriptors meanwhile are skipped.
func Openers(dev string) []string {
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return nil
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, proc := range procs {
		pid, err := strconv.Atoi(filepath.Base(proc))
		if err != nil {
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
