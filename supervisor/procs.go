package supervisor

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/xseg"
)

// What the supervisor reads from /proc: the peers that map the segment
// (whether or not a pidfile names them), and the NBD connections of the
// block endpoints as the kernel counts them.

// segProc is a process that maps the configured segment.
type segProc struct {
	pid     int
	prog    string   // program name
	roles   []string // its --role (archipelagod: each of them), none if none
	deleted bool     // it maps a segment file that was removed or replaced
}

// role names its roles in messages: "" if none, else them, space-separated.
func (sp segProc) role() string { return strings.Join(sp.roles, " ") }

// what names the process in messages: `nbdd of role "nbd"`,
// `archipelagod of roles "mapperd vlmcd"`.
func (sp segProc) what() string {
	if len(sp.roles) > 1 {
		return fmt.Sprintf("%s of roles %q", sp.prog, sp.role())
	}
	return fmt.Sprintf("%s of role %q", sp.prog, sp.role())
}

// hasRole reports whether the process serves one of names.
func (sp segProc) hasRole(names []string) bool {
	return slices.ContainsFunc(sp.roles, func(n string) bool { return slices.Contains(names, n) })
}

// segmentPeers lists the peer programs (those of programs, archipelagod
// and nulld) that map the segment's file, whether that file is still in
// place or was deleted: the processes a lost segment leaves behind, found
// by what they map rather than by their pidfiles.
func segmentPeers(name string) []segProc {
	progs := map[string]bool{"nulld": true, config.HostProgram: true}
	for _, p := range programs {
		progs[p] = true
	}
	path := filepath.Join(xseg.ShmDir, name)
	ents, _ := os.ReadDir("/proc")
	var out []segProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		prog := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
		if !progs[prog] {
			continue
		}
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			continue
		}
		found, deleted := false, false
		for _, line := range strings.Split(string(maps), "\n") {
			i := strings.Index(line, " /")
			if i < 0 {
				continue
			}
			switch strings.TrimSpace(line[i:]) {
			case path:
				found = true
			case path + " (deleted)":
				found, deleted = true, true
			}
		}
		if !found {
			continue
		}
		sp := segProc{pid: pid, prog: prog, deleted: deleted}
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			sp.roles = roleArgs(strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00"))
			if prog != config.HostProgram && len(sp.roles) > 1 {
				sp.roles = sp.roles[len(sp.roles)-1:] // the last one counts
			}
		}
		if xseg.ProcessAlive(pid) {
			out = append(out, sp)
		}
	}
	return out
}

// roleArgs returns the values of the --role flags of a command line, in
// order, given as "--role NAME" or "--role=NAME".
func roleArgs(args []string) []string {
	var roles []string
	for i, a := range args {
		if a == "--role" && i+1 < len(args) {
			roles = append(roles, args[i+1])
		} else if strings.HasPrefix(a, "--role=") {
			roles = append(roles, strings.TrimPrefix(a, "--role="))
		}
	}
	return roles
}

// progOf is the program that process pid runs ("" if it cannot be read).
func progOf(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
}

// mapsDeleted reports whether the live process pid maps the segment's
// file as deleted (it runs on a segment that was removed or replaced).
func mapsDeleted(pid int, name string) bool {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	return err == nil && strings.Contains(string(maps), filepath.Join(xseg.ShmDir, name)+" (deleted)")
}

// lostSegment says which roles still run while the segment they are on is
// gone (its file removed or replaced), and which peers map the deleted
// file without a pidfile naming them. Nothing started now could reach
// them, and they would run beside the new peers on the same storage.
func (s *Supervisor) lostSegment() []string {
	name := s.cfg.XSEG.Name
	exists := xseg.Exists(name)
	var lost []string
	named := map[int]bool{}
	for i := range s.cfg.Roles {
		r := &s.cfg.Roles[i]
		pi := s.proc(r)
		if !pi.Running() {
			continue
		}
		named[pi.PID] = true
		if pi.PID != 0 && (!exists || mapsDeleted(pi.PID, name)) {
			lost = append(lost, fmt.Sprintf("%s (pid %d)", r.Name, pi.PID))
		}
	}
	for _, sp := range segmentPeers(name) {
		if sp.deleted && !named[sp.pid] {
			lost = append(lost, fmt.Sprintf("%s (pid %d, no pidfile names it)", sp.what(), sp.pid))
		}
	}
	return lost
}

// nbdClients counts the NBD connections of a block endpoint as the kernel
// sees them now: the accepted and not yet accepted connections to its Unix
// socket (/proc/net/unix) and to its TCP address (/proc/net/tcp, tcp6).
// Where /proc cannot tell, it falls back to the count the endpoint writes
// (config.ClientsFile).
func (s *Supervisor) nbdClients(r *config.Role) int {
	n, err := unixConns(r.Socket)
	if err != nil {
		b, err := os.ReadFile(s.cfg.ClientsFile(r.Name))
		if err != nil {
			return 0
		}
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	if r.Listen != "" {
		if _, port, err := net.SplitHostPort(r.Listen); err == nil {
			if p, err := strconv.Atoi(port); err == nil {
				n += tcpConns(p)
			}
		}
	}
	return n
}

// unixConns counts the connections to the Unix socket at path
// (countUnixConns of /proc/net/unix).
func unixConns(path string) (int, error) {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return 0, err
	}
	return countUnixConns(string(b), path), nil
}

// countUnixConns counts, in a /proc/net/unix table, the server-side
// sockets of connections to the Unix socket at path: its entries other
// than the listener, connected (state 03) or waiting to be accepted
// (state 02).
func countUnixConns(table, path string) int {
	n := 0
	for _, line := range strings.Split(table, "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) < 8 || strings.Join(f[7:], " ") != path {
			continue
		}
		flags, _ := strconv.ParseUint(f[3], 16, 32)
		if flags&0x10000 != 0 { // __SO_ACCEPTCON: the listener
			continue
		}
		if f[5] == "02" || f[5] == "03" {
			n++
		}
	}
	return n
}

// tcpConns counts established TCP connections whose local port is port
// (countTCPConns of /proc/net/tcp and tcp6).
func tcpConns(port int) int {
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if b, err := os.ReadFile(file); err == nil {
			n += countTCPConns(string(b), port)
		}
	}
	return n
}

// countTCPConns counts, in a /proc/net/tcp or tcp6 table, the established
// connections (state 01) whose local port is port.
func countTCPConns(table string, port int) int {
	n := 0
	for _, line := range strings.Split(table, "\n")[1:] {
		// sl local_address rem_address st ...
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if p, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil && int(p) == port {
			n++
		}
	}
	return n
}
