package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
)

// The actions of Ganeti's ExtStorage interface, one script each.
var actions = []string{"create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close"}

func isAction(s string) bool {
	for _, a := range actions {
		if a == s {
			return true
		}
	}
	return false
}

// actionOf picks the action: the name the program was called by (a link
// in the provider directory named after it), else its first argument
// (archipelago-extstorage ACTION).
func actionOf(args []string) (string, error) {
	if len(args) > 0 && isAction(filepath.Base(args[0])) {
		return filepath.Base(args[0]), nil
	}
	if len(args) > 1 && isAction(args[1]) {
		return args[1], nil
	}
	what := "no action"
	if len(args) > 1 {
		what = fmt.Sprintf("unknown action %q", args[1])
	}
	return "", fmt.Errorf("%s: call this program as one of %s (a link named after the action), or with the action as its argument: %w",
		what, strings.Join(actions, ", "), errs.ErrInvalid)
}

// request is what Ganeti asks, read from its environment
// (lib/storage/extstorage.py, _ExtStorageEnvironment).
type request struct {
	Action string
	// Volume is VOL_NAME, Ganeti's unique name of the disk
	// (<uuid>.ext.disk<N>): the archipelago volume's name.
	Volume string
	// SizeMiB is VOL_SIZE: the size to create, or for grow the
	// current size (MiB).
	SizeMiB uint64
	// NewSizeMiB is VOL_NEW_SIZE, grow's new size (MiB).
	NewSizeMiB uint64
	// Metadata is VOL_METADATA (setinfo).
	Metadata string
	// Snapshot is VOL_SNAPSHOT_NAME (snapshot; default <VOL_NAME>.snap
	// as Ganeti's), SnapshotSizeMiB VOL_SNAPSHOT_SIZE if given.
	Snapshot        string
	SnapshotSizeMiB uint64
	// Exclusive is VOL_OPEN_EXCLUSIVE (open): True unless Ganeti says
	// False, as Ganeti's own default.
	Exclusive bool
	// CName and UUID are VOL_CNAME and VOL_UUID, the disk's name and
	// uuid in Ganeti, when it has them (for the log only).
	CName, UUID string
	// Params are the disk's parameters, EXTP_<NAME>, by lower-case name
	// (provider, access, origin, ...). Ganeti passes every --disk key,
	// for the disk's whole life.
	Params map[string]string
}

// Origin is the origin parameter (EXTP_ORIGIN): the snapshot or volume a
// new disk is a clone of. Only create reads it.
func (r request) Origin() string { return r.Params["origin"] }

// Access is the access parameter (EXTP_ACCESS): kernelspace (Ganeti's
// default) or userspace.
func (r request) Access() string {
	if a := r.Params["access"]; a != "" {
		return a
	}
	return "kernelspace"
}

// maxMiB is the largest size in MiB a volume may have.
const maxMiB = volclient.MaxSize >> 20

// parseEnv reads action's request from environ (KEY=VALUE strings, as
// os.Environ), checking what the action needs.
func parseEnv(action string, environ []string) (request, error) {
	env := map[string]string{}
	r := request{Action: action, Exclusive: true, Params: map[string]string{}}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		env[k] = v
		if p, ok := strings.CutPrefix(k, "EXTP_"); ok && p != "" {
			r.Params[strings.ToLower(p)] = v
		}
	}
	bad := func(key, why string) error {
		return fmt.Errorf("%s: %s=%q %s: %w", action, key, env[key], why, errs.ErrInvalid)
	}
	size := func(key string, required bool) (uint64, error) {
		s, ok := env[key]
		if !ok || s == "" {
			if required {
				return 0, fmt.Errorf("%s: %s is not set (Ganeti passes it in MiB): %w", action, key, errs.ErrInvalid)
			}
			return 0, nil
		}
		n, err := strconv.ParseUint(s, 10, 64)
		switch {
		case err != nil:
			return 0, bad(key, "is not a whole number of MiB")
		case n == 0:
			return 0, bad(key, "is zero")
		case n > maxMiB:
			return 0, fmt.Errorf("%s: %s=%s MiB beyond the largest volume (%d MiB): %w", action, key, s, uint64(maxMiB), errs.ErrTooLarge)
		}
		return n, nil
	}
	r.Volume = env["VOL_NAME"]
	r.CName, r.UUID = env["VOL_CNAME"], env["VOL_UUID"]
	if r.Volume == "" && action != "verify" {
		return r, fmt.Errorf("%s: VOL_NAME is not set (is this program run by Ganeti?): %w", action, errs.ErrInvalid)
	}
	var err error
	switch action {
	case "create":
		r.SizeMiB, err = size("VOL_SIZE", true)
	case "grow":
		if r.SizeMiB, err = size("VOL_SIZE", false); err == nil {
			r.NewSizeMiB, err = size("VOL_NEW_SIZE", true)
		}
	case "setinfo":
		r.Metadata = env["VOL_METADATA"]
	case "snapshot":
		r.Snapshot = env["VOL_SNAPSHOT_NAME"]
		if r.Snapshot == "" {
			r.Snapshot = r.Volume + ".snap"
		}
		r.SnapshotSizeMiB, err = size("VOL_SNAPSHOT_SIZE", false)
	case "open":
		if s, ok := env["VOL_OPEN_EXCLUSIVE"]; ok && s != "" {
			if r.Exclusive, err = strconv.ParseBool(s); err != nil {
				err = bad("VOL_OPEN_EXCLUSIVE", "is neither True nor False")
			}
		}
	}
	return r, err
}

// describe is the request in one line for the log: the volume and what
// Ganeti said about it.
func (r request) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "volume %q", r.Volume)
	if r.CName != "" {
		fmt.Fprintf(&b, " (disk %s)", r.CName)
	}
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, r.Params[k])
	}
	return b.String()
}
