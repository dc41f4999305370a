package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/roles"
)

// hostedRole is a role this process runs: its program's command runs in a
// goroutine until its context ends.
type hostedRole struct {
	name, prog string
	cmd        *cobra.Command // the role's program's command (roles.ForType)
	args       []string       // its command line
	cancel     context.CancelFunc
	done       chan struct{} // closed when the command returned
	err        error         // what it returned, once done
}

// plan checks the roles named on the command line against the
// configuration before anything starts and returns them in that order,
// each with its program's command line (--role NAME [--config PATH]).
func plan(cfg *config.Config, configPath string, names []string) ([]*hostedRole, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no --role given: name the roles of the configuration to run here: %w", errs.ErrInvalid)
	}
	where := "the built-in configuration"
	if cfg.Path != "" {
		where = cfg.Path
	}
	seen := map[string]bool{}
	var hs []*hostedRole
	for _, n := range names {
		r, ok := cfg.Role(n)
		if !ok {
			var all []string
			for _, r := range cfg.Roles {
				all = append(all, r.Name)
			}
			return nil, fmt.Errorf("role %q: no such role in %s (its roles: %s): %w", n, where, strings.Join(all, ", "), errs.ErrNotFound)
		}
		if seen[n] {
			return nil, fmt.Errorf("role %q given twice: %w", n, errs.ErrInvalid)
		}
		seen[n] = true
		prog, cmd, ok := roles.ForType(r.Type)
		if !ok {
			err := fmt.Errorf("role %q: type %s cannot run in archipelagod as built (it runs %s; rados_blocker needs the ceph build tag, %s of archipelago-rados): %w",
				n, r.Type, strings.Join(roles.Types(), ", "), cephHost, errs.ErrNotSupported)
			if r.Type == config.TypeRadosBlocker {
				err = &needsCeph{err}
			}
			return nil, err
		}
		args := []string{"--role", n}
		if configPath != "" {
			args = append(args, "--config", configPath)
		}
		hs = append(hs, &hostedRole{name: n, prog: prog, cmd: cmd, args: args})
	}
	return hs, nil
}

// host runs the roles in order, each once the one before serves, until ctx
// ends (nil: a signal) or a role fails; then it stops the roles started, in
// the reverse order. A role that fails to start or stops on its own is
// the error, named.
func host(ctx context.Context, log *slog.Logger, hs []*hostedRole) error {
	exited := make(chan *hostedRole, len(hs))
	var started []*hostedRole
	stopAll := func() {
		for i := len(started) - 1; i >= 0; i-- {
			h := started[i]
			h.cancel()
			<-h.done
			if h.err != nil {
				log.Error("role stopped", "role", h.name, "err", h.err)
			} else {
				log.Info("role stopped", "role", h.name)
			}
		}
	}
	// failed names the role h that returned while it should have run.
	failed := func(h *hostedRole, what string) error {
		err := h.err
		if err == nil {
			err = fmt.Errorf("returned with no error: %w", errs.ErrShutdown)
		}
		return fmt.Errorf("role %s (%s) %s: %w", h.name, h.prog, what, err)
	}
	for _, h := range hs {
		ready := make(chan struct{})
		rctx, cancel := context.WithCancel(context.Background())
		rctx = daemon.WithHosted(rctx, daemon.Hosted{Role: h.name, Ready: func() { close(ready) }})
		h.cancel, h.done = cancel, make(chan struct{})
		h.cmd.SetArgs(h.args)
		log.Info("starting role", "role", h.name, "program", h.prog, "args", strings.Join(h.args, " "))
		go func() {
			h.err = h.cmd.ExecuteContext(rctx)
			close(h.done)
			exited <- h
		}()
		started = append(started, h)
		select {
		case <-ready:
			log.Info("role serves", "role", h.name)
		case x := <-exited:
			stopAll()
			if x == h {
				return failed(x, "failed to start")
			}
			return failed(x, "stopped while "+h.name+" was starting")
		case <-ctx.Done():
			log.Info("stopping before every role started", "roles", len(started), "of", len(hs))
			stopAll()
			return nil
		}
	}
	log.Info("every role serves", "roles", len(hs))
	select {
	case <-ctx.Done():
		stopAll()
		return nil
	case x := <-exited:
		log.Error("a role stopped on its own: stopping the others", "role", x.name, "err", x.err)
		stopAll()
		return failed(x, "stopped on its own")
	}
}

// cephHost is archipelagod built with the ceph tag (it runs radosd's
// roles too), which the package archipelago-rados installs: the
// archipelagod of the package archipelago, built without librados, runs
// it in its place for a configuration with a rados_blocker role to host.
// $ARCHIPELAGO_CEPH_HOST names another one (tests).
var cephHost = "/usr/lib/archipelago/rados/archipelagod"

// needsCeph is the error of a plan with a role only cephHost runs.
type needsCeph struct{ error }

func (e *needsCeph) Unwrap() error { return e.error }

// execCephHost replaces this process (same pid, same arguments) by
// cephHost, if that is installed and is not this program; it returns only
// if it did not.
func execCephHost() error {
	path := cephHost
	if p := os.Getenv("ARCHIPELAGO_CEPH_HOST"); p != "" {
		path = p
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if self, err := os.Executable(); err == nil {
		if me, err := os.Stat(self); err == nil && os.SameFile(me, st) {
			return fmt.Errorf("%s is this program", path)
		}
	}
	return syscall.Exec(path, append([]string{path}, os.Args[1:]...), os.Environ())
}
