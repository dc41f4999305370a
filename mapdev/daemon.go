package mapdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/peer"
	"github.com/archipelago-go/archipelago/volclient"
)

// Wait is how long Map waits for its daemon to map the volume, and Unmap
// for a daemon to let go.
const Wait = time.Minute

// LogFile is the log of mapping id's daemon: LOG_DIR/map-<id>.log.
func LogFile(cfg *config.Config, id int) string { return cfg.LogFile(fmt.Sprintf("map-%d", id)) }

// MapOptions say how Map starts the map daemon.
type MapOptions struct {
	// Command is the daemon's command line without the mapping's id:
	// Map runs it with "--id", <id>, "--lock-fd", "3" appended and the
	// mapping's lock as descriptor 3; the daemon calls Serve with them.
	// vlmc's is [vlmc, --config, <file>, map-serve, <volume>].
	Command []string
	// Timeout bounds the question to vlmcd whether the volume exists;
	// 0 means no bound but ctx's.
	Timeout time.Duration
}

// Map maps volume (a volume or a snapshot, read-only) to a block device:
// it reserves a mapping id, starts the map daemon (o.Command) in a
// session of its own, logging to LogFile, and returns the mapping's
// record once the daemon has saved it. The daemon outlives the caller;
// Unmap stops it. It fails with errs.ErrExists if the volume is mapped
// already, with the daemon's last words if it dies before, and with
// errs.ErrBusy (the daemon is stopped) if it has not mapped the volume
// within Wait.
func Map(ctx context.Context, cfg *config.Config, volume string, o MapOptions) (State, error) {
	if err := Available(); err != nil {
		return State{}, fmt.Errorf("volume %q: %w", volume, err)
	}
	if len(o.Command) == 0 {
		return State{}, fmt.Errorf("volume %q: no map daemon command: %w", volume, errs.ErrInvalid)
	}
	if err := checkVolume(ctx, cfg, volume, o.Timeout); err != nil {
		return State{}, err
	}
	reg := NewRegistry(cfg)
	states, err := reg.List()
	if err != nil {
		return State{}, err
	}
	for _, s := range states {
		if s.Volume == volume && reg.Alive(s.ID) {
			return State{}, fmt.Errorf("volume %q is already mapped at %s (id %d): %w", volume, s.Device, s.ID, errs.ErrExists)
		}
	}
	id, lock, err := reg.Reserve()
	if err != nil {
		return State{}, fmt.Errorf("volume %q: %w", volume, err)
	}
	defer lock.Close()
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return State{}, err
	}
	logPath := LogFile(cfg, id)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return State{}, err
	}
	defer logf.Close()
	argv := append(o.Command[1:len(o.Command):len(o.Command)], "--id", strconv.Itoa(id), "--lock-fd", "3")
	cmd := exec.Command(o.Command[0], argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{lock} // fd 3: the daemon holds the lock from now on
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return State{}, fmt.Errorf("volume %q: start the map daemon: %w", volume, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	deadline := time.After(Wait)
	for {
		if s, err := reg.Load(id); err == nil && s.PID == pid {
			return s, nil
		}
		select {
		case err := <-exited:
			return State{}, fmt.Errorf("volume %q: the map daemon failed (%v): %s (log: %s)", volume, err, lastLine(logPath), logPath)
		case <-deadline:
			cmd.Process.Signal(syscall.SIGTERM)
			return State{}, fmt.Errorf("volume %q: not mapped within %v; see %s: %w", volume, Wait, logPath, errs.ErrBusy)
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			return State{}, fmt.Errorf("volume %q: not mapped: %w", volume, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// checkVolume asks vlmcd whether volume exists, so that a wrong name
// fails before a daemon starts.
func checkVolume(ctx context.Context, cfg *config.Config, volume string, timeout time.Duration) error {
	vc, err := volclient.DialConfig(cfg)
	if err != nil {
		return err
	}
	defer vc.Disconnect()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	_, err = vc.Info(ctx, volume)
	return err
}

// lastLine returns the last line of a daemon's log: its error.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log"
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return "(nothing)"
	}
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[i+1:]
	}
	if t := strings.TrimSpace(text); t != "" {
		return t
	}
	return "no log"
}

// ServeOptions say which mapping a daemon serves.
type ServeOptions struct {
	// ID is the mapping's id, reserved by Map (or picked by hand).
	ID int
	// Lock is the mapping's lock that Map passed down; Serve closes it
	// when it returns. nil: Serve takes the lock itself (Registry.Lock),
	// for a daemon started by hand.
	Lock *os.File
	// Timeout bounds opening the volume; 0 means no bound but ctx's.
	Timeout time.Duration
	// Logger gets the daemon's progress and trouble (with the volume and
	// id added); nil: text on stderr (the log file when Map started it).
	Logger *slog.Logger
	// Client are the options of the daemon's segment client
	// (RemoteOptions.Client).
	Client peer.ClientOptions
}

// Serve is the map daemon of mapping o.ID: it opens volume through vlmcd
// (Remote), serves it as the file of a FUSE filesystem (Mount), attaches
// a loop device to that file (Attach), saves the mapping's record and
// serves until ctx is done (or the filesystem is unmounted from outside).
// Then it detaches the device if unmap has not, unmounts, flushes the
// volume and removes the record. ctx done during the setup undoes what
// is done.
func Serve(ctx context.Context, cfg *config.Config, volume string, o ServeOptions) error {
	lock := o.Lock
	if o.ID < 0 {
		if lock != nil {
			lock.Close()
		}
		return fmt.Errorf("volume %q: mapping id %d: %w", volume, o.ID, errs.ErrInvalid)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	log = log.With("volume", volume, "id", o.ID)
	seg, port, err := volclient.Vlmcd(cfg)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return err
	}
	reg := NewRegistry(cfg)
	if lock == nil {
		if lock, err = reg.Lock(o.ID); err != nil {
			return err
		}
	}
	defer lock.Close() // last: the lock says we live

	dctx, cancel := ctx, context.CancelFunc(func() {})
	if o.Timeout > 0 {
		dctx, cancel = context.WithTimeout(ctx, o.Timeout)
	}
	dev, err := DialRemote(dctx, RemoteOptions{Segment: seg, VlmcdPort: port, Volume: volume, Logger: log, Client: o.Client})
	cancel()
	if err != nil {
		return err
	}
	defer dev.Close()
	mnt := reg.Mountpoint(o.ID)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	defer reg.Remove(o.ID)
	srv, err := Mount(mnt, dev, MountOptions{Name: volume, Logger: log})
	if err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
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
	var loop string          // the device attached
	var attached os.FileInfo // the file it is attached to
	defer func() {
		// Normally unmap has detached the device already; not if the
		// daemon was stopped otherwise, or losetup was interrupted, or
		// the filesystem was unmounted lazily from outside (then the
		// file has no path, and only its inode says it is ours).
		devs := LoopsOf(srv.Path())
		if loop != "" && !slices.Contains(devs, loop) && attached != nil && AttachedTo(loop, attached) {
			devs = append(devs, loop)
		}
		for _, d := range devs {
			if busy, _ := InUse(d); busy {
				log.Warn("the device is in use: it detaches when its user lets go", "device", d)
			}
			if err := Detach(context.Background(), d); err != nil {
				log.Error("detach", "err", err)
			}
		}
	}()
	actx, acancel := context.WithTimeout(ctx, time.Minute)
	loop, err = Attach(actx, srv.Path(), dev.ReadOnly())
	acancel()
	if err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	if attached, err = os.Stat(srv.Path()); err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	dio := DirectIO(loop)
	if !dio {
		log.Warn("the loop device does not do direct I/O", "device", loop)
	}
	st := State{ID: o.ID, Volume: volume, Device: loop, PID: os.Getpid(), Mountpoint: srv.Dir(),
		File: srv.Path(), ReadOnly: dev.ReadOnly(), DirectIO: dio}
	if ctx.Err() != nil {
		return fmt.Errorf("volume %q: stopped while mapping", volume)
	}
	// Before the record exists: Refresh signals only daemons that have one.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := reg.Save(st); err != nil {
		return err
	}
	log.Info("mapped", "device", loop, "file", srv.Path(), "readonly", st.ReadOnly, "direct_io", dio, "size", dev.Size())
	poll := time.NewTicker(GrowPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping on a signal")
			return nil
		case <-srv.Done():
			log.Warn("the filesystem was unmounted from outside")
			return nil
		case <-hup:
			follow(ctx, log, dev, srv, loop)
		case <-poll.C:
			follow(ctx, log, dev, srv, loop)
		}
	}
}

// GrowPoll is how often a map daemon asks whether its volume grew, for a
// resize on another host (a resize on this host signals it: Refresh).
const GrowPoll = 5 * time.Second

// follow makes the mapping take the volume's size if it grew: the
// volume's session (Remote.Grow), then the kernel's view of the file
// (Server.Resized), then the loop device's capacity (SetCapacity). A step
// that fails is logged and retried at the next poll or signal.
func follow(ctx context.Context, log *slog.Logger, dev *Remote, srv *Server, loop string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := dev.Grow(ctx); err != nil {
		lvl := slog.LevelWarn
		if retryable(err) || ctx.Err() != nil {
			lvl = slog.LevelDebug // the peers are away: I/O says so already
		}
		log.Log(ctx, lvl, "checking whether the volume grew", "err", err)
		return
	}
	want := dev.Size() &^ 511 // the loop device counts whole sectors
	have, err := DeviceSize(loop)
	if err != nil || have >= want {
		return
	}
	if err := srv.Resized(); err != nil {
		log.Error("the volume grew but the mapped file did not follow", "size", dev.Size(), "err", err)
		return
	}
	if err := SetCapacity(loop); err != nil {
		log.Error("the volume grew but the device did not follow", "device", loop, "size", dev.Size(), "err", err)
		return
	}
	now, err := DeviceSize(loop)
	if err != nil || now < want {
		log.Error("the volume grew but the device did not follow", "device", loop, "size", dev.Size(), "device_size", now, "err", err)
		return
	}
	log.Info("the volume grew: the device follows", "device", loop, "size", now, "old_size", have)
}

// RefreshWait bounds how long Refresh waits for a map daemon to show a
// volume's new size on its device.
const RefreshWait = 30 * time.Second

// mappingsOf returns the live mappings of volume on this installation
// (daemon alive, device attached).
func mappingsOf(cfg *config.Config, volume string) ([]State, error) {
	reg := NewRegistry(cfg)
	states, err := reg.List()
	if err != nil {
		return nil, err
	}
	var out []State
	for _, s := range states {
		if s.Volume == volume && reg.Status(s) == "mapped" {
			out = append(out, s)
		}
	}
	return out, nil
}

// Refresh makes the devices that map volume on this installation take
// its size: it signals their map daemons (SIGHUP; they also poll every
// GrowPoll) and returns once each device shows at least size bytes
// (rounded down to whole 512-byte sectors), or fails after RefreshWait
// (or when ctx ends) naming the volume and the device that did not
// follow. A volume mapped nowhere here returns at once.
func Refresh(ctx context.Context, cfg *config.Config, volume string, size uint64) error {
	maps, err := mappingsOf(cfg, volume)
	if err != nil {
		return err
	}
	for _, s := range maps {
		if err := syscall.Kill(s.PID, syscall.SIGHUP); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("volume %q: signal the map daemon of %s (pid %d): %w", volume, s.Device, s.PID, err)
		}
	}
	want := size &^ 511
	start := time.Now()
	deadline := start.Add(RefreshWait)
	for _, s := range maps {
		for {
			have, err := DeviceSize(s.Device)
			if err == nil && have >= want {
				break
			}
			if err != nil && Backing(s.Device) != s.File {
				break // unmapped meanwhile
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("volume %q: resized to %d bytes, but its mapped device %s still shows %d after %v; see the map daemon's log %s: %w",
					volume, size, s.Device, have, time.Since(start).Round(time.Millisecond), LogFile(cfg, s.ID), errs.ErrBusy)
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// Resize sets volume's size through vc, as `vlmc resize` does, and
// returns once the devices that map it on this installation show the new
// size (Refresh). Without force it only grows (volclient.Resize); with
// force it may shrink (volclient.ResizeForce), but not a volume mapped
// here: errs.ErrBusy, since the device's user (a filesystem, a VM) still
// addresses what would be cut off. Mappings on other hosts follow a
// growth within GrowPoll, and a shrink not at all.
func Resize(ctx context.Context, cfg *config.Config, vc *volclient.Client, volume string, size uint64, force bool) error {
	if !force {
		if err := vc.Resize(ctx, volume, size); err != nil {
			return err
		}
		return Refresh(ctx, cfg, volume, size)
	}
	maps, err := mappingsOf(cfg, volume)
	if err != nil {
		return err
	}
	if len(maps) > 0 {
		vi, err := vc.Info(ctx, volume)
		if err != nil {
			return err
		}
		if size < vi.Size {
			devs := make([]string, len(maps))
			for i, s := range maps {
				devs[i] = s.Device
			}
			return fmt.Errorf("volume %q is mapped at %s: shrinking it from %d to %d bytes under the device would cut off data its user still addresses; unmap it first (vlmc unmap %s): %w",
				volume, strings.Join(devs, ", "), vi.Size, size, maps[0].Device, errs.ErrBusy)
		}
	}
	if err := vc.ResizeForce(ctx, volume, size); err != nil {
		return err
	}
	return Refresh(ctx, cfg, volume, size)
}

// find picks the mapping an unmap argument names: a device path, an id
// or a volume.
func find(states []State, arg string) (State, error) {
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
		return State{}, fmt.Errorf("device %s is not mapped (vlmc showmapped lists the mapped devices): %w", arg, errs.ErrNotFound)
	}
	if id, err := strconv.Atoi(arg); err == nil {
		for _, s := range states {
			if s.ID == id {
				return s, nil
			}
		}
		return State{}, fmt.Errorf("no mapping with id %d (vlmc showmapped lists the mapped devices): %w", id, errs.ErrNotFound)
	}
	var found []State
	for _, s := range states {
		if s.Volume == arg {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return State{}, fmt.Errorf("volume %q is not mapped (vlmc showmapped lists the mapped devices): %w", arg, errs.ErrNotFound)
	case 1:
		return found[0], nil
	}
	devs := make([]string, len(found))
	for i, s := range found {
		devs[i] = s.Device
	}
	return State{}, fmt.Errorf("volume %q is mapped %d times (%s): give the device: %w", arg, len(found), strings.Join(devs, ", "), errs.ErrInvalid)
}

// Unmap undoes the mapping that arg names (its device path, its id or
// its volume): it detaches the device (errs.ErrBusy while it is mounted
// or otherwise in use), stops the daemon, waiting up to Wait for it to
// unmount and flush, and removes the record. A mapping whose daemon died
// is cleaned up (its dead FUSE mount detached).
func Unmap(ctx context.Context, cfg *config.Config, arg string) error {
	reg := NewRegistry(cfg)
	states, err := reg.List()
	if err != nil {
		return err
	}
	s, err := find(states, arg)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("device %s (volume %q)", s.Device, s.Volume)
	ctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	if s.File != "" && Backing(s.Device) == s.File {
		busy, err := InUse(s.Device)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if busy {
			return fmt.Errorf("%s is busy: it is mounted or in use; unmount it first: %w", what, errs.ErrBusy)
		}
		if users := Openers(s.Device); len(users) > 0 {
			return fmt.Errorf("%s is open by %s: close it first (stop the VM or program): %w", what, strings.Join(users, ", "), errs.ErrBusy)
		}
		if err := Detach(ctx, s.Device); err != nil {
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
					what, s.PID, Wait, LogFile(cfg, s.ID), errs.ErrBusy)
			case <-time.After(10 * time.Millisecond):
			}
		}
	} else if s.Mountpoint != "" {
		// The daemon died: its filesystem is a dead mount.
		syscall.Unmount(s.Mountpoint, syscall.MNT_DETACH)
	}
	return reg.Remove(s.ID)
}

// Mapping is a mapping's record and how it is now.
type Mapping struct {
	State
	// Status is "mapped", "dead" (its daemon died: Unmap cleans up) or
	// "detached" (its device was detached by hand).
	Status string `json:"state"`
}

// Status says how mapping s is (see Mapping.Status).
func (r Registry) Status(s State) string {
	switch {
	case !r.Alive(s.ID):
		return "dead"
	case Backing(s.Device) != s.File:
		return "detached"
	}
	return "mapped"
}

// List returns the mappings of the installation that cfg describes, by
// id, each with its status.
func List(cfg *config.Config) ([]Mapping, error) {
	reg := NewRegistry(cfg)
	states, err := reg.List()
	if err != nil {
		return nil, err
	}
	out := make([]Mapping, 0, len(states))
	for _, s := range states {
		out = append(out, Mapping{s, reg.Status(s)})
	}
	return out, nil
}
