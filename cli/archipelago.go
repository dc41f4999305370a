package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
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

// pid reads a role's pidfile; 0 if there is none or its process is gone.
func (m *manager) pid(r *config.Role) int {
	b, err := os.ReadFile(m.cfg.PidFile(r.Name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !xseg.ProcessAlive(pid) {
		return 0
	}
	return pid
}

// segment joins the configured segment, creating it if missing and
// replacing it if no live process uses it (left by a crash).
func (m *manager) segment(out io.Writer) (*xseg.Segment, error) {
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
					return nil, fmt.Errorf("segment %q is in use with %d MiB and %d ports (%d dynamic from), the configuration says %d MiB, %d ports, %d: stop every peer first",
						x.Name, in.Size>>20, in.Ports, in.DynPorts, x.SizeMiB, x.Ports, x.DynPorts)
				}
				return seg, nil
			}
			seg.Close()
		} else if errors.Is(err, errs.ErrVersion) {
			// Made by another version of Archipelago: its peers, if
			// any still run, are ours by their pidfiles.
			for i := range m.cfg.Roles {
				if pid := m.pid(&m.cfg.Roles[i]); pid != 0 {
					return nil, fmt.Errorf("%w; role %s (pid %d) of that version still runs: stop it with the archipelago that started it",
						err, m.cfg.Roles[i].Name, pid)
				}
			}
		}
		// Nobody lives on it (or it is unreadable): a crash left it.
		fmt.Fprintf(out, "segment %s: stale (no live peer), recreating\n", x.Name)
		if err := xseg.Destroy(x.Name); err != nil && !errors.Is(err, errs.ErrNotFound) {
			return nil, err
		}
	}
	return xseg.Create(want)
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
	seg, err := m.segment(out)
	if err != nil {
		return err
	}
	defer seg.Close()
	for _, r := range roles {
		if pid := m.pid(r); pid != 0 {
			if owner, alive := seg.Owner(r.PortStart); alive && owner == pid {
				fmt.Fprintf(out, "%s: already running (pid %d)\n", r.Name, pid)
				continue
			}
		}
		pid, err := m.launch(seg, r)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: started (pid %d, ports %d..%d)\n", r.Name, pid, r.PortStart, r.PortEnd)
	}
	return nil
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
			return 0, fmt.Errorf("%s: %s exited (%v) before binding its ports; %s says:\n%s", r.Name, filepath.Base(bin), err, logPath, tail(logPath, 5))
		case <-deadline:
			return 0, fmt.Errorf("%s: did not bind port %d within 15 s; see %s", r.Name, r.PortStart, logPath)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// busy says why the peers should not stop: mapped volumes, NBD clients.
func (m *manager) busy() []string {
	var why []string
	if ents, err := os.ReadDir(filepath.Join(m.cfg.RunDir, "mapped")); err == nil && len(ents) > 0 {
		why = append(why, fmt.Sprintf("%d volume(s) mapped (vlmc showmapped)", len(ents)))
	}
	for _, r := range m.cfg.RolesOfType(config.TypeNBDEndpoint) {
		b, err := os.ReadFile(filepath.Join(m.cfg.RunDir, r.Name+".clients"))
		if err != nil || m.pid(r) == 0 {
			continue
		}
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n > 0 {
			why = append(why, fmt.Sprintf("%d NBD client(s) connected to %s", n, r.Name))
		}
	}
	return why
}

func (m *manager) stop(out io.Writer, args []string, force bool) error {
	roles, err := m.roles(args)
	if err != nil {
		return err
	}
	if why := m.busy(); len(why) > 0 && !force {
		return fmt.Errorf("refusing to stop: %s; use -f to stop anyway: %w", strings.Join(why, ", "), errs.ErrBusy)
	}
	for i := len(roles) - 1; i >= 0; i-- {
		r := roles[i]
		pid := m.pid(r)
		if pid == 0 {
			fmt.Fprintf(out, "%s: not running\n", r.Name)
			os.Remove(m.cfg.PidFile(r.Name))
			continue
		}
		syscall.Kill(pid, syscall.SIGTERM)
		stopped := waitGone(pid, 15*time.Second)
		if !stopped && force {
			syscall.Kill(pid, syscall.SIGKILL)
			stopped = waitGone(pid, 5*time.Second)
		}
		if !stopped {
			return fmt.Errorf("%s: pid %d did not stop within 15 s (use -f to kill it): %w", r.Name, pid, errs.ErrBusy)
		}
		os.Remove(m.cfg.PidFile(r.Name))
		fmt.Fprintf(out, "%s: stopped (pid %d)\n", r.Name, pid)
	}
	if len(args) == 0 && !m.user {
		if err := xseg.Destroy(m.cfg.XSEG.Name); err == nil {
			fmt.Fprintf(out, "segment %s: removed\n", m.cfg.XSEG.Name)
		}
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
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tTYPE\tPID\tPORTS\tSTATE\tINFLIGHT\tQUEUED")
	down := 0
	for i := range m.cfg.Roles {
		r := &m.cfg.Roles[i]
		pid := m.pid(r)
		state, inflight, queued := "stopped", 0, 0
		if pid != 0 {
			state = "starting"
		}
		if seg != nil {
			owner, alive := seg.Owner(r.PortStart)
			switch {
			case alive && owner == pid:
				state = "running"
			case owner != 0 && !alive:
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
	tw.Flush()
	if down > 0 {
		return fmt.Errorf("%d of %d peers not running", down, len(m.cfg.Roles))
	}
	return nil
}
