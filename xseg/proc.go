package xseg

import (
	"bytes"
	"os"
	"strconv"
	"time"
)

// procInfo reads /proc/<pid>/stat and reports whether the process exists and
// is not a zombie, and its start time (clock ticks since boot). A zombie is
// dead for our purposes: it will never touch the segment again.
func procInfo(pid uint32) (alive bool, start uint64) {
	if pid == 0 {
		return false, 0
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
	if err != nil {
		return false, 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, starttime field 22.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false, 0
	}
	f := bytes.Fields(b[i+2:])
	if len(f) < 20 {
		return false, 0
	}
	if st := f[0][0]; st == 'Z' || st == 'X' || st == 'x' {
		return false, 0
	}
	start, _ = strconv.ParseUint(string(f[19]), 10, 64)
	return true, start
}

// ProcessAlive reports whether pid names a live process (a zombie is
// dead: it will never act again). Tools use it on pidfiles.
func ProcessAlive(pid int) bool {
	return pid > 0 && pid <= 1<<31-1 && pidAlive(uint32(pid))
}

// pidAlive reports whether pid names a live process.
func pidAlive(pid uint32) bool {
	ok, _ := procInfo(pid)
	return ok
}

// ownerAlive reports whether the process pid started at start still runs
// (start 0 means unknown: the pid alone decides).
func ownerAlive(pid uint32, start uint64) bool {
	ok, st := procInfo(pid)
	return ok && (start == 0 || st == start)
}

// ProcessStart reports whether pid names a live process and its start
// time (clock ticks since boot): with the pid, an identity that a reused
// pid does not share.
func ProcessStart(pid int) (alive bool, start uint64) {
	if pid <= 0 || pid > 1<<31-1 {
		return false, 0
	}
	return procInfo(uint32(pid))
}

// clockTicks is USER_HZ, the unit of /proc start times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

// ProcessStartedAfter reports whether the live process pid started after
// t (to the second: false when it cannot tell).
func ProcessStartedAfter(pid int, t time.Time) bool {
	alive, start := ProcessStart(pid)
	if !alive {
		return false
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := bytes.Fields(line); len(f) == 2 && string(f[0]) == "btime" {
			boot, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil {
				return false
			}
			started := time.Unix(boot+int64(start/clockTicks), 0)
			return started.After(t.Add(time.Second))
		}
	}
	return false
}
