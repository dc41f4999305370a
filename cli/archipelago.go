package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/xseg"
)

// Programs maps a role type to the program that serves it.
var Programs = map[string]string{
	config.TypeFileBlocker:  "filed",
	config.TypeRadosBlocker: "radosd",
	config.TypeMapperd:      "mapperd",
	config.TypeVlmcd:        "vlmcd",
	config.TypeNBDEndpoint:  "nbdd",
}

// Archipelago is the `archipelago` command: start, stop, restart and show
// the peers of the configuration.
func Archipelago() *cobra.Command {
	var cfgPath string
	var user bool
	root := &cobra.Command{
		Use:   "archipelago",
		Short: "Start, stop and inspect Archipelago's peers",
		Long: `archipelago runs the peers of the configuration (/etc/archipelago/archipelago.conf,
$ARCHIPELAGO_CONFIG or --config; the built-in default when there is no file) as
daemons, in ORDER (stopped in reverse), each with a pidfile under RUN_DIR and a
log under LOG_DIR. With -u, only the storage peers: the block endpoint
(nbd_endpoint roles) is left alone.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&cfgPath, "config", "", "configuration file")
	root.PersistentFlags().BoolVarP(&user, "user", "u", false, "userspace storage peers only (not the block endpoint)")
	load := func() (*manager, error) {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return nil, err
		}
		return &manager{cfg: cfg, cfgArg: cfgPath, user: user}, nil
	}

	start := &cobra.Command{
		Use:   "start [role]",
		Short: "Start every peer, or one role (idempotent)",
		Example: `  archipelago start            # segment and every peer
  archipelago start blockerb   # one role
  archipelago -u start         # storage peers only`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := load()
			if err != nil {
				return err
			}
			unlock, err := m.runLock(cmd.OutOrStdout(), "start")
			if err != nil {
				return err
			}
			defer unlock()
			return m.start(cmd.OutOrStdout(), args)
		},
	}
	var force bool
	stop := &cobra.Command{
		Use:   "stop [-f] [role]",
		Short: "Stop every peer (in reverse order), or one role",
		Long: `stop sends SIGTERM to each peer and waits for it to finish what is in flight.
It refuses while volumes are mapped or NBD clients are connected, unless -f;
with -f it also kills (SIGKILL) a peer that does not stop within 15 s.
Stopping every peer removes the segment.`,
		Example: `  archipelago stop
  archipelago stop -f vlmcd`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := load()
			if err != nil {
				return err
			}
			unlock, err := m.runLock(cmd.OutOrStdout(), "stop")
			if err != nil {
				return err
			}
			defer unlock()
			return m.stop(cmd.OutOrStdout(), args, force)
		},
	}
	stop.Flags().BoolVarP(&force, "force", "f", false, "stop even with mapped volumes or NBD clients; kill peers that do not stop")
	restart := &cobra.Command{
		Use:     "restart [role]",
		Short:   "Stop, then start every peer, or one role",
		Example: "  archipelago restart\n  archipelago restart mapperd",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := load()
			if err != nil {
				return err
			}
			unlock, err := m.runLock(cmd.OutOrStdout(), "restart")
			if err != nil {
				return err
			}
			defer unlock()
			if err := m.stop(cmd.OutOrStdout(), args, force); err != nil {
				return err
			}
			return m.start(cmd.OutOrStdout(), args)
		},
	}
	restart.Flags().BoolVarP(&force, "force", "f", false, "as for stop")
	status := &cobra.Command{
		Use:   "status",
		Short: "One line per role: pid, ports, state, requests in flight; exit 0 only if all run",
		Example: `  archipelago status
  archipelago status || echo "something is down"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := load()
			if err != nil {
				return err
			}
			return m.status(cmd.OutOrStdout())
		},
	}
	var dflt bool
	cfgCmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (or the built-in default)",
		Example: `  archipelago config
  archipelago config --default > /etc/archipelago/archipelago.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dflt {
				fmt.Fprint(cmd.OutOrStdout(), config.DefaultText)
				return nil
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), cfg.Format())
			return nil
		},
	}
	cfgCmd.Flags().BoolVar(&dflt, "default", false, "print the built-in default, commented")
	root.AddCommand(start, stop, restart, status, cfgCmd)
	return root
}

// manager starts and stops the roles of one configuration.
type manager struct {
	cfg    *config.Config
	cfgArg string // --config as given ("" lets the peers find it the same way)
	user   bool
}

// roles returns the roles to act on, in ORDER.
func (m *manager) roles(args []string) ([]*config.Role, error) {
	var out []*config.Role
	for i := range m.cfg.Roles {
		r := &m.cfg.Roles[i]
		if len(args) > 0 && r.Name != args[0] {
			continue
		}
		if m.user && r.Type == config.TypeNBDEndpoint && len(args) == 0 {
			continue
		}
		out = append(out, r)
	}
	if len(args) > 0 && len(out) == 0 {
		names := make([]string, len(m.cfg.Roles))
		for i, r := range m.cfg.Roles {
			names[i] = r.Name
		}
		return nil, fmt.Errorf("no role %q in %s (roles: %s): %w", args[0], m.cfgName(), strings.Join(names, ", "), errs.ErrNotFound)
	}
	return out, nil
}

func (m *manager) cfgName() string {
	if m.cfg.Path == "" {
		return "the built-in configuration"
	}
	return m.cfg.Path
}

// proc reads a role's pidfile and checks its process (peer.ReadPidfile:
// the lock a running peer holds on it, and the pid's identity).
func (m *manager) proc(r *config.Role) peer.PidInfo {
	return peer.ReadPidfile(m.cfg.PidFile(r.Name))
}

// pid is the pid of the role's running process; 0 if none runs (or it has
// not written its pid yet).
func (m *manager) pid(r *config.Role) int {
	if pi := m.proc(r); pi.Running() {
		return pi.PID
	}
	return 0
}

// removeStale removes a role's pidfile if no process holds it (a peer that
// was killed leaves it). A running peer's pidfile is never touched.
func (m *manager) removeStale(r *config.Role) { peer.RemoveStalePidfile(m.cfg.PidFile(r.Name)) }

// runLock serialises start, stop and restart of one configuration: they
// take an exclusive flock on <RUN_DIR>/archipelago.lock for their whole
// run. A second one says who holds it and waits (up to runLockWait); when
// its turn comes it sees what the first one did (a second start finds the
// peers running).
func (m *manager) runLock(out io.Writer, what string) (func(), error) {
	if err := os.MkdirAll(m.cfg.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w (run it as root, or as the user that started the peers)", what, err)
	}
	path := filepath.Join(m.cfg.RunDir, "archipelago.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrPermission) {
		// Another user's installation: a read-only descriptor takes the
		// lock too, and what comes next says what this user may not do.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (run it as root, or as the user that started the peers)", what, m.cfgName(), err)
	}
	deadline := time.Now().Add(runLockWait)
	said := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		holder := "another archipelago"
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s (%s) still runs after %v; not starting %s beside it: %w", holder, path, runLockWait, what, errs.ErrBusy)
		}
		if !said {
			fmt.Fprintf(out, "%s runs (%s): waiting for it to finish\n", holder, path)
			said = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("archipelago %s (pid %d)\n", what, os.Getpid())), 0)
	return func() { f.Truncate(0); f.Close() }, nil
}

// runLockWait bounds how long start, stop or restart waits for another.
const runLockWait = 3 * time.Minute

// segProc is a process that maps the configured segment.
type segProc struct {
	pid     int
	prog    string // program name
	role    string // its --role, "" if none
	deleted bool   // it maps a segment file that was removed or replaced
}

// segmentPeers lists the peer programs (those of Programs, and nulld)
// that map the segment's file, whether that file is still in place or was
// deleted: the processes a lost segment leaves behind, found by what they
// map rather than by their pidfiles.
func segmentPeers(name string) []segProc {
	progs := map[string]bool{"nulld": true}
	for _, p := range Programs {
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
			args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
			for i, a := range args {
				if a == "--role" && i+1 < len(args) {
					sp.role = args[i+1]
				} else if strings.HasPrefix(a, "--role=") {
					sp.role = strings.TrimPrefix(a, "--role=")
				}
			}
		}
		if xseg.ProcessAlive(pid) {
			out = append(out, sp)
		}
	}
	return out
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
func (m *manager) lostSegment() []string {
	name := m.cfg.XSEG.Name
	exists := xseg.Exists(name)
	var lost []string
	named := map[int]bool{}
	for i := range m.cfg.Roles {
		r := &m.cfg.Roles[i]
		pi := m.proc(r)
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
			lost = append(lost, fmt.Sprintf("%s of role %q (pid %d, no pidfile names it)", sp.prog, sp.role, sp.pid))
		}
	}
	return lost
}

// segment joins the configured segment, creating it if missing and
// replacing it if no live process uses it (left by a crash). created says
// that this call made it.
func (m *manager) segment(out io.Writer) (seg *xseg.Segment, created bool, err error) {
	x := m.cfg.XSEG
	want := xseg.Config{Name: x.Name, SizeMiB: x.SizeMiB, Ports: x.Ports, DynPorts: x.DynPorts}
	if xseg.Exists(x.Name) {
		seg, err := xseg.Join(x.Name)
		if err == nil {
			in := seg.Info()
			live := false
			for no := 0; no < in.Ports && !live; no++ {
				_, live = seg.Owner(no)
			}
			if live {
				if in.Size != uint64(x.SizeMiB)<<20 || in.Ports != x.Ports || in.DynPorts != x.DynPorts {
					seg.Close()
					return nil, false, fmt.Errorf("segment %q is in use with %d MiB and %d ports (%d dynamic from), the configuration says %d MiB, %d ports, %d: stop every peer first",
						x.Name, in.Size>>20, in.Ports, in.DynPorts, x.SizeMiB, x.Ports, x.DynPorts)
				}
				return seg, false, nil
			}
			seg.Close()
		} else if errors.Is(err, errs.ErrVersion) {
			// Made by another version of Archipelago: its peers, if
			// any still run, are ours by their pidfiles.
			for i := range m.cfg.Roles {
				if pid := m.pid(&m.cfg.Roles[i]); pid != 0 {
					return nil, false, fmt.Errorf("%w; role %s (pid %d) of that version still runs: stop it with the archipelago that started it",
						err, m.cfg.Roles[i].Name, pid)
				}
			}
		}
		// Nobody lives on it (or it is unreadable): a crash left it.
		fmt.Fprintf(out, "segment %s: stale (no live peer), recreating\n", x.Name)
		if err := xseg.Destroy(x.Name); err != nil && !errors.Is(err, errs.ErrNotFound) {
			return nil, false, err
		}
	}
	seg, err = xseg.Create(want)
	if err != nil {
		return nil, false, err
	}
	return seg, true, nil
}

func (m *manager) start(out io.Writer, args []string) error {
	roles, err := m.roles(args)
	if err != nil {
		return err
	}
	for _, d := range []string{m.cfg.RunDir, m.cfg.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if lost := m.lostSegment(); len(lost) > 0 {
		return fmt.Errorf("segment %s (%s) was removed or replaced while %s still run on the old one: starting now would run a second set of peers beside them on the same storage; run 'archipelago stop' first: %w",
			m.cfg.XSEG.Name, filepath.Join(xseg.ShmDir, m.cfg.XSEG.Name), strings.Join(lost, ", "), errs.ErrBusy)
	}
	seg, created, err := m.segment(out)
	if err != nil {
		return err
	}
	defer seg.Close()
	for _, r := range roles {
		if pi := m.settled(r); pi.Running() {
			// Its process lives: never a second one, whatever the
			// segment says.
			if owner, alive := seg.Owner(r.PortStart); alive && owner == pi.PID {
				fmt.Fprintf(out, "%s: already running (pid %d)\n", r.Name, pi.PID)
				continue
			}
			if pi.PID == 0 {
				return fmt.Errorf("%s: a process holds %s and has not written its pid yet (starting?): %w", r.Name, m.cfg.PidFile(r.Name), errs.ErrBusy)
			}
			return fmt.Errorf("%s: runs as pid %d (%s) but does not own port %d of segment %s: %w",
				r.Name, pi.PID, m.cfg.PidFile(r.Name), r.PortStart, m.cfg.XSEG.Name, errs.ErrBusy)
		}
		pid, err := m.launch(seg, r)
		if err != nil {
			if created && !m.segmentInUse(seg) {
				if xseg.Destroy(m.cfg.XSEG.Name) == nil {
					err = fmt.Errorf("%w\nsegment %s: removed (no peer runs on it)", err, m.cfg.XSEG.Name)
				}
			}
			return err
		}
		fmt.Fprintf(out, "%s: started (pid %d, ports %d..%d)\n", r.Name, pid, r.PortStart, r.PortEnd)
	}
	return nil
}

// pidSettle is how long start waits for a pidfile that a live lock holds
// but that names no live process.
const pidSettle = 5 * time.Second

// settled reads a role's pidfile; if a lock holder is there but the file
// names no live process, it waits (up to pidSettle) for that to change:
// the holder is a peer starting (its pid not written yet), or one just
// killed (its lock goes only with its last thread, after its pid reads
// as a zombie).
func (m *manager) settled(r *config.Role) peer.PidInfo {
	pi := m.proc(r)
	for deadline := time.Now().Add(pidSettle); pi.Held && pi.PID == 0 && time.Now().Before(deadline); pi = m.proc(r) {
		time.Sleep(10 * time.Millisecond)
	}
	return pi
}

// segmentInUse reports whether a live process owns a port of seg.
func (m *manager) segmentInUse(seg *xseg.Segment) bool {
	for no := 0; no < seg.Info().Ports; no++ {
		if _, alive := seg.Owner(no); alive {
			return true
		}
	}
	return false
}

// program finds the program serving a role type: next to this program,
// else on PATH.
func program(typ string) (string, error) {
	name, ok := Programs[typ]
	if !ok {
		return "", fmt.Errorf("no program serves role type %q: %w", typ, errs.ErrNotSupported)
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("program %s for role type %s: %w", name, typ, err)
	}
	return p, nil
}

// launch starts a role's daemon and waits until it has bound its ports and
// written its pidfile (the last thing a peer does when it starts: status
// reads it).
func (m *manager) launch(seg *xseg.Segment, r *config.Role) (int, error) {
	bin, err := program(r.Type)
	if err != nil {
		return 0, err
	}
	logPath := m.cfg.LogFile(r.Name)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	// What this run writes starts here: a failure quotes only that.
	var from int64
	if fi, err := logf.Stat(); err == nil {
		from = fi.Size()
	}
	argv := []string{"--role", r.Name}
	if m.cfgArg != "" {
		abs, _ := filepath.Abs(m.cfgArg)
		argv = append(argv, "--config", abs)
	}
	cmd := exec.Command(bin, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%s: %w", r.Name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	deadline := time.After(15 * time.Second)
	for {
		if owner, alive := seg.Owner(r.PortStart); alive && owner == pid && m.pid(r) == pid {
			return pid, nil
		}
		select {
		case err := <-exited:
			return 0, fmt.Errorf("%s: %s exited (%v) before binding its ports; %s says:\n%s", r.Name, filepath.Base(bin), err, logPath, tailFrom(logPath, from, 5))
		case <-deadline:
			return 0, fmt.Errorf("%s: did not bind port %d within 15 s; see %s", r.Name, r.PortStart, logPath)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string { return tailFrom(path, 0, n) }

// tailFrom returns the last n lines a file got from offset from on.
func tailFrom(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if from > 0 && from <= int64(len(b)) {
		b = b[from:]
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return "  (nothing)"
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// busy says why the peers should not stop: mapped volumes, NBD clients.
// The client count is the kernel's, read now (nbdClients), not a file the
// endpoint rewrites now and then; a count that is not zero is read again
// for up to a second, for clients that are just leaving.
func (m *manager) busy() []string {
	var why []string
	if ents, err := os.ReadDir(filepath.Join(m.cfg.RunDir, "mapped")); err == nil && len(ents) > 0 {
		why = append(why, fmt.Sprintf("%d volume(s) mapped (vlmc showmapped)", len(ents)))
	}
	for _, r := range m.cfg.RolesOfType(config.TypeNBDEndpoint) {
		if m.pid(r) == 0 {
			continue
		}
		n := m.nbdClients(r)
		for deadline := time.Now().Add(time.Second); n > 0 && time.Now().Before(deadline); n = m.nbdClients(r) {
			time.Sleep(20 * time.Millisecond)
		}
		if n > 0 {
			why = append(why, fmt.Sprintf("%d NBD client(s) connected to %s", n, r.Name))
		}
	}
	return why
}

// holdSockets moves the Unix socket of every running block endpoint
// aside (<socket>.stopping), so that no client connects while stop counts
// and stops; connections made before are counted (nbdClients reads them by
// the address they were bound to). The function it returns puts each
// socket back if its endpoint still runs, else removes it.
func (m *manager) holdSockets() func() {
	type held struct {
		r        *config.Role
		pid      int
		from, to string
	}
	var hs []held
	for _, r := range m.cfg.RolesOfType(config.TypeNBDEndpoint) {
		pid := m.pid(r)
		if pid == 0 || r.Socket == "" {
			continue
		}
		to := r.Socket + ".stopping"
		if os.Rename(r.Socket, to) == nil {
			hs = append(hs, held{r, pid, r.Socket, to})
		}
	}
	return func() {
		for _, h := range hs {
			if xseg.ProcessAlive(h.pid) {
				os.Rename(h.to, h.from)
			} else {
				os.Remove(h.to)
			}
		}
	}
}

// nbdClients counts the NBD connections of a block endpoint as the kernel
// sees them now: the accepted and not yet accepted connections to its Unix
// socket (/proc/net/unix) and to its TCP address (/proc/net/tcp, tcp6).
// Where /proc cannot tell, it falls back to the count the endpoint writes.
func (m *manager) nbdClients(r *config.Role) int {
	n, err := unixConns(r.Socket)
	if err != nil {
		b, err := os.ReadFile(filepath.Join(m.cfg.RunDir, r.Name+".clients"))
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

// unixConns counts the server-side sockets of connections to the Unix
// socket at path: its entries in /proc/net/unix other than the listener,
// connected (state 3) or waiting to be accepted (state 2).
func unixConns(path string) (int, error) {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
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
	return n, nil
}

// tcpConns counts established TCP connections whose local port is port.
func tcpConns(port int) int {
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
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
	}
	return n
}

func (m *manager) stop(out io.Writer, args []string, force bool) error {
	roles, err := m.roles(args)
	if err != nil {
		return err
	}
	if !force {
		// No new client between the count and the stop: the endpoints'
		// sockets are moved aside first (a connect then fails at once),
		// and back when the endpoint still runs at the end.
		defer m.holdSockets()()
		if why := m.busy(); len(why) > 0 {
			return fmt.Errorf("refusing to stop: %s; use -f to stop anyway: %w", strings.Join(why, ", "), errs.ErrBusy)
		}
	}
	for i := len(roles) - 1; i >= 0; i-- {
		r := roles[i]
		pi := m.proc(r)
		if pi.Running() && pi.PID == 0 {
			// Locked, pid not written yet: a peer starting.
			deadline := time.Now().Add(5 * time.Second)
			for pi.Running() && pi.PID == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				pi = m.proc(r)
			}
		}
		if !pi.Running() || pi.PID == 0 {
			fmt.Fprintf(out, "%s: not running\n", r.Name)
			m.removeStale(r)
			continue
		}
		if err := stopPid(pi.PID, force); err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		m.removeStale(r)
		fmt.Fprintf(out, "%s: stopped (pid %d)\n", r.Name, pi.PID)
	}
	// Peers no pidfile names that still map the segment, deleted or not
	// (left by a segment that was removed under them, or by a pidfile
	// that was removed).
	for _, sp := range segmentPeers(m.cfg.XSEG.Name) {
		if (len(args) > 0 && sp.role != args[0]) || (m.user && len(args) == 0 && m.isEndpoint(sp.role)) {
			continue
		}
		if err := stopPid(sp.pid, force); err != nil {
			return fmt.Errorf("%s of role %q, on segment %s but named by no pidfile: %w", sp.prog, sp.role, m.cfg.XSEG.Name, err)
		}
		on := "on"
		if sp.deleted {
			on = "on the deleted"
		}
		fmt.Fprintf(out, "%s: stopped %s (pid %d) %s segment %s, which no pidfile named\n", sp.role, sp.prog, sp.pid, on, m.cfg.XSEG.Name)
	}
	if len(args) == 0 && !m.user {
		if err := xseg.Destroy(m.cfg.XSEG.Name); err == nil {
			fmt.Fprintf(out, "segment %s: removed\n", m.cfg.XSEG.Name)
		}
	}
	return nil
}

func (m *manager) isEndpoint(role string) bool {
	r, ok := m.cfg.Role(role)
	return ok && r.Type == config.TypeNBDEndpoint
}

// stopPid sends SIGTERM to pid and waits for it to go; with force it
// kills what does not stop within 15 s. A process of another user is an
// error at once.
func stopPid(pid int, force bool) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("pid %d: permission denied (%w): it belongs to another user; run this as root or as that user", pid, err)
		}
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	stopped := waitGone(pid, 15*time.Second)
	if !stopped && force {
		syscall.Kill(pid, syscall.SIGKILL)
		stopped = waitGone(pid, 5*time.Second)
	}
	if !stopped {
		return fmt.Errorf("pid %d did not stop within 15 s (use -f to kill it): %w", pid, errs.ErrBusy)
	}
	return nil
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for xseg.ProcessAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func (m *manager) status(out io.Writer) error {
	x := m.cfg.XSEG
	seg, err := xseg.Join(x.Name)
	var problems []string
	switch {
	case errors.Is(err, errs.ErrNotFound):
		fmt.Fprintf(out, "segment %s: not running\n", x.Name)
	case err != nil:
		fmt.Fprintf(out, "segment %s: not running: %v\n", x.Name, err)
	default:
		defer seg.Close()
		in := seg.Info()
		fmt.Fprintf(out, "segment %s: %d MiB, %d ports, %d/%d requests free, heap %d/%d MiB used\n",
			x.Name, in.Size>>20, in.Ports, in.FreeRequests, in.Requests, in.HeapUsed>>20, in.HeapBytes>>20)
	}
	if lost := m.lostSegment(); len(lost) > 0 {
		msg := fmt.Sprintf("segment %s (%s) was removed or replaced while %s still run on the old one; no new client reaches them: run 'archipelago stop', then 'archipelago start'",
			x.Name, filepath.Join(xseg.ShmDir, x.Name), strings.Join(lost, ", "))
		fmt.Fprintln(out, msg)
		problems = append(problems, "the segment was lost under running peers")
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tTYPE\tPID\tPORTS\tSTATE\tINFLIGHT\tQUEUED")
	down := 0
	named := map[int]bool{}
	for i := range m.cfg.Roles {
		r := &m.cfg.Roles[i]
		pi := m.proc(r)
		pid := 0
		state, inflight, queued := "stopped", 0, 0
		if pi.Running() {
			pid = pi.PID
			named[pid] = true
			state = "starting"
			if pid != 0 && mapsDeleted(pid, x.Name) {
				state = "on a deleted segment"
			}
		}
		if seg != nil {
			owner, alive := seg.Owner(r.PortStart)
			switch {
			case alive && pid != 0 && owner == pid:
				state = "running"
			case owner != 0 && !alive && pid == 0:
				state = "dead"
			}
			for no := r.PortStart; no <= r.PortEnd; no++ {
				if ps, err := seg.PortStat(no); err == nil {
					inflight += ps.InFlight
					queued += ps.Queued
				}
			}
		}
		if state != "running" {
			down++
		}
		pidS := "-"
		if pid != 0 {
			pidS = strconv.Itoa(pid)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d..%d\t%s\t%d\t%d\n", r.Name, r.Type, pidS, r.PortStart, r.PortEnd, state, inflight, queued)
	}
	for _, sp := range segmentPeers(x.Name) {
		if named[sp.pid] {
			continue
		}
		_, configured := m.cfg.Role(sp.role)
		state := "extra (not a role of the configuration)"
		switch {
		case sp.deleted:
			state = "orphan on a deleted segment"
		case configured:
			state = "orphan (its pidfile does not name it)"
		}
		role := sp.role
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t-\t%s\t-\t-\n", role, sp.prog, sp.pid, state)
		if sp.deleted || configured {
			problems = append(problems, fmt.Sprintf("%s (pid %d) of role %q runs with no pidfile naming it", sp.prog, sp.pid, sp.role))
		}
	}
	tw.Flush()
	if down > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d peers not running", down, len(m.cfg.Roles)))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
