package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/mapdev"
)

// How long `vlmc map` waits for its daemon to map the volume, and `vlmc
// unmap` for it to let go.
const (
	mapWait   = time.Minute
	unmapWait = time.Minute
)

// vlmcMapCommands are map, unmap, showmapped and the hidden map-serve (the
// map daemon that `vlmc map` starts).
func vlmcMapCommands(env *vlmcEnv) []*cobra.Command {
	mapCmd := &cobra.Command{
		Use:   "map VOLUME",
		Short: "Map a volume or snapshot to a block device and print its path",
		Long: `map starts a map daemon for the volume, which serves it as a file of a FUSE
filesystem under RUN_DIR/mnt/<id>/ and attaches a loop device with direct I/O
to that file. The device's path (/dev/loopN) is printed once it is ready.
Snapshots are mapped read-only. The daemon's log is LOG_DIR/map-<id>.log.
Needs root, /dev/fuse and loop devices.`,
		Example: `  vlmc map vm1-disk                      # prints e.g. /dev/loop0
  mkfs.ext4 -q $(vlmc map vm1-disk)
  dev=$(vlmc map debian-12-image)        # a snapshot: read-only`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, err := mapVolume(env, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), dev)
			return nil
		},
	}

	unmap := &cobra.Command{
		Use:   "unmap DEVICE|ID|VOLUME",
		Short: "Detach a mapped block device and stop its map daemon",
		Long: `unmap detaches the loop device (refusing while it is mounted or otherwise in
use), stops the map daemon, which flushes the volume and unmounts its FUSE
filesystem, and removes the mapping's record. It also cleans up after a
map daemon that died.`,
		Example: `  vlmc unmap /dev/loop0
  vlmc unmap vm1-disk
  vlmc unmap 0            # by id, as vlmc showmapped lists it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return unmapDevice(env, args[0])
		},
	}

	var asJSON bool
	showmapped := &cobra.Command{
		Use:   "showmapped [--json]",
		Short: "List the mapped volumes: id, volume, device, daemon pid, state",
		Example: `  vlmc showmapped
  vlmc showmapped --json | jq -r '.[].device'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(env.cfgPath)
			if err != nil {
				return err
			}
			return showMapped(cmd.OutOrStdout(), mapdev.Registry{RunDir: cfg.RunDir}, asJSON)
		},
	}
	showmapped.Flags().BoolVar(&asJSON, "json", false, "print JSON records (id, volume, device, pid, mountpoint, readonly, state)")

	var id, lockFD int
	serve := &cobra.Command{
		Use:    "map-serve VOLUME --id ID [--lock-fd FD]",
		Short:  "The map daemon of one mapping (vlmc map starts it)",
		Hidden: true,
		Example: `  vlmc map-serve vm1-disk --id 0    # in the foreground, for debugging
  vlmc unmap 0                       # from another shell`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return serveMapping(env, args[0], id, lockFD)
		},
	}
	serve.Flags().IntVar(&id, "id", -1, "mapping id (reserved by vlmc map)")
	serve.Flags().IntVar(&lockFD, "lock-fd", -1, "inherited descriptor holding the mapping's lock")
	return []*cobra.Command{mapCmd, unmap, showmapped, serve}
}

// mapVolume starts a map daemon for name and returns the device once the
// daemon has recorded the mapping.
func mapVolume(env *vlmcEnv, name string) (string, error) {
	if err := mapdev.Available(); err != nil {
		return "", fmt.Errorf("volume %q: %w", name, err)
	}
	if err := env.dial(); err != nil {
		return "", err
	}
	_, err := env.info(name)
	env.close()
	if err != nil {
		return "", err
	}
	cfg := env.cfg
	reg := mapdev.Registry{RunDir: cfg.RunDir}
	states, err := reg.List()
	if err != nil {
		return "", err
	}
	for _, s := range states {
		if s.Volume == name && reg.Alive(s.ID) {
			return "", fmt.Errorf("volume %q is already mapped at %s (id %d): %w", name, s.Device, s.ID, errs.ErrExists)
		}
	}
	id, lock, err := reg.Reserve()
	if err != nil {
		return "", fmt.Errorf("volume %q: %w", name, err)
	}
	defer lock.Close()
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return "", err
	}
	logPath := filepath.Join(cfg.LogDir, fmt.Sprintf("map-%d.log", id))
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	var argv []string
	if env.cfgPath != "" {
		abs, _ := filepath.Abs(env.cfgPath)
		argv = append(argv, "--config", abs)
	}
	argv = append(argv, "map-serve", name, "--id", strconv.Itoa(id), "--lock-fd", "3")
	cmd := exec.Command(self, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{lock} // fd 3: the daemon holds the lock from now on
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("volume %q: start the map daemon: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	deadline := time.After(mapWait)
	for {
		if s, err := reg.Load(id); err == nil && s.PID == pid {
			return s.Device, nil
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("volume %q: the map daemon failed (%v): %s (log: %s)", name, err, lastLine(logPath), logPath)
		case <-deadline:
			cmd.Process.Signal(syscall.SIGTERM)
			return "", fmt.Errorf("volume %q: not mapped within %v; see %s: %w", name, mapWait, logPath, errs.ErrBusy)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// lastLine returns the last line of a daemon's log: its error.
func lastLine(path string) string {
	if t := strings.TrimSpace(tail(path, 1)); t != "" {
		return t
	}
	return "no log"
}

// serveMapping is the map daemon: it serves volume name as mapping id
// until SIGTERM.
// Its last words (an error) go to stderr, the log, through daemon.Fatal.
func serveMapping(env *vlmcEnv, name string, id, lockFD int) error {
	if id < 0 {
		return fmt.Errorf("volume %q: --id is required: %w", name, errs.ErrInvalid)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("volume", name, "id", id)
	// A signal during the setup undoes what is done; after it, unmaps.
	stop, unnotify := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer unnotify()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	cfg, err := config.Load(env.cfgPath)
	if err != nil {
		return err
	}
	rs := cfg.RolesOfType(config.TypeVlmcd)
	if len(rs) == 0 {
		return fmt.Errorf("%s has no vlmcd role: %w", cfg.Path, errs.ErrNotFound)
	}
	reg := mapdev.Registry{RunDir: cfg.RunDir}
	var lock *os.File
	if lockFD >= 0 {
		lock = os.NewFile(uintptr(lockFD), "mapping lock")
	} else if lock, err = reg.Lock(id); err != nil {
		return err
	}
	defer lock.Close() // last: the lock says we live

	ctx, cancel := context.WithTimeout(stop, env.timeout)
	dev, err := mapdev.DialRemote(ctx, mapdev.RemoteOptions{Segment: cfg.XSEG.Name, VlmcdPort: rs[0].PortStart, Volume: name, Logger: log})
	cancel()
	if err != nil {
		return err
	}
	defer dev.Close()
	mnt := reg.Mountpoint(id)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	defer reg.Remove(id)
	srv, err := mapdev.Mount(mnt, dev, mapdev.MountOptions{Name: name, Logger: log})
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Unmount(ctx); err != nil {
			log.Error("unmount", "err", err)
		}
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer fcancel()
		if !dev.ReadOnly() {
			if err := dev.Flush(fctx); err != nil {
				log.Error("final flush", "err", err)
			}
		}
		log.Info("unmapped")
	}()
	defer func() {
		// Normally unmap has detached the device already; not if the
		// daemon was stopped otherwise, or losetup was interrupted.
		for _, d := range mapdev.LoopsOf(srv.Path()) {
			if busy, _ := mapdev.InUse(d); busy {
				log.Warn("the device is in use: it detaches when its user lets go", "device", d)
			}
			if err := mapdev.Detach(context.Background(), d); err != nil {
				log.Error("detach", "err", err)
			}
		}
	}()
	actx, acancel := context.WithTimeout(stop, time.Minute)
	loop, err := mapdev.Attach(actx, srv.Path(), dev.ReadOnly())
	acancel()
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	dio := mapdev.DirectIO(loop)
	if !dio {
		log.Warn("the loop device does not do direct I/O", "device", loop)
	}
	st := mapdev.State{ID: id, Volume: name, Device: loop, PID: os.Getpid(), Mountpoint: srv.Dir(),
		File: srv.Path(), ReadOnly: dev.ReadOnly(), DirectIO: dio}
	if stop.Err() != nil {
		return fmt.Errorf("volume %q: stopped while mapping", name)
	}
	if err := reg.Save(st); err != nil {
		return err
	}
	log.Info("mapped", "device", loop, "file", srv.Path(), "readonly", st.ReadOnly, "direct_io", dio, "size", dev.Size())
	select {
	case <-stop.Done():
		log.Info("stopping on a signal")
	case <-srv.Done():
		log.Warn("the filesystem was unmounted from outside")
	}
	return nil
}

// findMapping picks the mapping an unmap argument names: a device path,
// an id or a volume.
func findMapping(states []mapdev.State, arg string) (mapdev.State, error) {
	if strings.HasPrefix(arg, "/") {
		p := filepath.Clean(arg)
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		for _, s := range states {
			if s.Device == p || s.Device == arg {
				return s, nil
			}
		}
		return mapdev.State{}, fmt.Errorf("device %s is not mapped (vlmc showmapped lists the mapped devices): %w", arg, errs.ErrNotFound)
	}
	if id, err := strconv.Atoi(arg); err == nil {
		for _, s := range states {
			if s.ID == id {
				return s, nil
			}
		}
		return mapdev.State{}, fmt.Errorf("no mapping with id %d (vlmc showmapped lists the mapped devices): %w", id, errs.ErrNotFound)
	}
	var found []mapdev.State
	for _, s := range states {
		if s.Volume == arg {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return mapdev.State{}, fmt.Errorf("volume %q is not mapped (vlmc showmapped lists the mapped devices): %w", arg, errs.ErrNotFound)
	case 1:
		return found[0], nil
	}
	devs := make([]string, len(found))
	for i, s := range found {
		devs[i] = s.Device
	}
	return mapdev.State{}, fmt.Errorf("volume %q is mapped %d times (%s): give the device: %w", arg, len(found), strings.Join(devs, ", "), errs.ErrInvalid)
}

// unmapDevice detaches a mapping's device, stops its daemon and removes
// its record.
func unmapDevice(env *vlmcEnv, arg string) error {
	cfg, err := config.Load(env.cfgPath)
	if err != nil {
		return err
	}
	reg := mapdev.Registry{RunDir: cfg.RunDir}
	states, err := reg.List()
	if err != nil {
		return err
	}
	s, err := findMapping(states, arg)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("device %s (volume %q)", s.Device, s.Volume)
	ctx, cancel := context.WithTimeout(context.Background(), unmapWait)
	defer cancel()
	if s.File != "" && mapdev.Backing(s.Device) == s.File {
		busy, err := mapdev.InUse(s.Device)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if busy {
			return fmt.Errorf("%s is busy: it is mounted or in use; unmount it first: %w", what, errs.ErrBusy)
		}
		if err := mapdev.Detach(ctx, s.Device); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if reg.Alive(s.ID) {
		if err := syscall.Kill(s.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%s: signal the map daemon (pid %d): %w", what, s.PID, err)
		}
		for reg.Alive(s.ID) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: the map daemon (pid %d) did not stop within %v; see %s: %w",
					what, s.PID, unmapWait, filepath.Join(cfg.LogDir, fmt.Sprintf("map-%d.log", s.ID)), errs.ErrBusy)
			case <-time.After(10 * time.Millisecond):
			}
		}
	} else if s.Mountpoint != "" {
		// The daemon died: its filesystem is a dead mount.
		syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH)
	}
	return reg.Remove(s.ID)
}

// mappedState says how a mapping is: mapped, dead (its daemon died:
// unmap cleans up) or detached (its device was detached by hand).
func mappedState(reg mapdev.Registry, s mapdev.State) string {
	switch {
	case !reg.Alive(s.ID):
		return "dead"
	case mapdev.Backing(s.Device) != s.File:
		return "detached"
	}
	return "mapped"
}

func showMapped(w io.Writer, reg mapdev.Registry, asJSON bool) error {
	states, err := reg.List()
	if err != nil {
		return err
	}
	if asJSON {
		type row struct {
			mapdev.State
			Status string `json:"state"`
		}
		out := []row{}
		for _, s := range states {
			out = append(out, row{s, mappedState(reg, s)})
		}
		return printJSON(w, out)
	}
	if len(states) == 0 {
		fmt.Fprintln(w, "no volumes mapped")
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVOLUME\tDEVICE\tPID\tMODE\tSTATE")
	for _, s := range states {
		mode := "rw"
		if s.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Volume, s.Device, s.PID, mode, mappedState(reg, s))
	}
	return tw.Flush()
}
