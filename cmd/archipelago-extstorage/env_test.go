package main

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

func TestActionOf(t *testing.T) {
	for _, k := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/share/ganeti/extstorage/archipelago/attach"}, "attach"},
		{[]string{"./close"}, "close"},
		{[]string{"create", "remove"}, "create"}, // the name wins
		{[]string{"/usr/lib/archipelago/archipelago-extstorage", "grow"}, "grow"},
		{[]string{"archipelago-extstorage", "setinfo", "extra"}, "setinfo"},
	} {
		got, err := actionOf(k.args)
		if err != nil || got != k.want {
			t.Errorf("actionOf(%q) = %q, %v; want %q", k.args, got, err, k.want)
		}
	}
	for _, args := range [][]string{
		{"archipelago-extstorage"},
		{"archipelago-extstorage", "resize"},
		{"/x/map", "ATTACH"},
		{},
	} {
		_, err := actionOf(args)
		if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), "create, attach, detach") {
			t.Errorf("actionOf(%q) = %v, want ErrInvalid listing the actions", args, err)
		}
	}
}

func TestParseEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin", "LC_ALL=C", "VOL_NAME=0f1e.ext.disk0", "EXTP_PROVIDER=archipelago"}
	env := func(kv ...string) []string { return append(append([]string{}, base...), kv...) }
	for _, k := range []struct {
		action string
		env    []string
		check  func(r request) bool
	}{
		{"create", env("VOL_SIZE=10240", "VOL_CNAME=data", "VOL_UUID=u-1"), func(r request) bool {
			return r.SizeMiB == 10240 && r.Origin() == "" && r.CName == "data" && r.UUID == "u-1" && r.Access() == "kernelspace"
		}},
		{"create", env("VOL_SIZE=1", "EXTP_ORIGIN=debian-12", "EXTP_ACCESS=userspace"), func(r request) bool {
			return r.SizeMiB == 1 && r.Origin() == "debian-12" && r.Access() == "userspace" &&
				reflect.DeepEqual(r.Params, map[string]string{"provider": "archipelago", "origin": "debian-12", "access": "userspace"})
		}},
		{"grow", env("VOL_SIZE=1024", "VOL_NEW_SIZE=2048"), func(r request) bool { return r.SizeMiB == 1024 && r.NewSizeMiB == 2048 }},
		{"grow", env("VOL_NEW_SIZE=2048"), func(r request) bool { return r.SizeMiB == 0 && r.NewSizeMiB == 2048 }},
		{"setinfo", env("VOL_METADATA=originstname+vm1.example.org"), func(r request) bool { return r.Metadata == "originstname+vm1.example.org" }},
		{"setinfo", env(), func(r request) bool { return r.Metadata == "" }},
		{"snapshot", env("VOL_SNAPSHOT_NAME=s1", "VOL_SNAPSHOT_SIZE=1024"), func(r request) bool { return r.Snapshot == "s1" && r.SnapshotSizeMiB == 1024 }},
		{"snapshot", env(), func(r request) bool { return r.Snapshot == "0f1e.ext.disk0.snap" }},
		{"open", env("VOL_OPEN_EXCLUSIVE=True"), func(r request) bool { return r.Exclusive }},
		{"open", env("VOL_OPEN_EXCLUSIVE=False"), func(r request) bool { return !r.Exclusive }},
		{"open", env(), func(r request) bool { return r.Exclusive }},
		// Parameters reach every action for the disk's life: only create
		// acts on origin, and a size is read only where it means one.
		{"attach", env("EXTP_ORIGIN=img", "VOL_SIZE=junk"), func(r request) bool { return r.Volume == "0f1e.ext.disk0" && r.SizeMiB == 0 }},
		{"verify", []string{"PATH=/usr/bin"}, func(r request) bool { return r.Volume == "" }},
		{"detach", env("EXTP_=x", "NOEQUALS"), func(r request) bool { return len(r.Params) == 1 }},
	} {
		r, err := parseEnv(k.action, k.env)
		if err != nil || r.Action != k.action || !k.check(r) {
			t.Errorf("parseEnv(%s, %q) = %+v, %v", k.action, k.env, r, err)
		}
	}
}

func TestParseEnvRefuses(t *testing.T) {
	for _, k := range []struct {
		action string
		env    []string
		want   error
		says   string
	}{
		{"attach", []string{"VOL_SIZE=1"}, errs.ErrInvalid, "VOL_NAME is not set"},
		{"create", []string{"VOL_NAME=v"}, errs.ErrInvalid, "VOL_SIZE is not set"},
		{"create", []string{"VOL_NAME=v", "VOL_SIZE="}, errs.ErrInvalid, "VOL_SIZE is not set"},
		{"create", []string{"VOL_NAME=v", "VOL_SIZE=10G"}, errs.ErrInvalid, `VOL_SIZE="10G" is not a whole number of MiB`},
		{"create", []string{"VOL_NAME=v", "VOL_SIZE=-1"}, errs.ErrInvalid, "not a whole number"},
		{"create", []string{"VOL_NAME=v", "VOL_SIZE=0"}, errs.ErrInvalid, "is zero"},
		{"create", []string{"VOL_NAME=v", "VOL_SIZE=1099511627777"}, errs.ErrTooLarge, "beyond the largest volume (1099511627776 MiB)"},
		{"grow", []string{"VOL_NAME=v", "VOL_SIZE=1"}, errs.ErrInvalid, "VOL_NEW_SIZE is not set"},
		{"grow", []string{"VOL_NAME=v", "VOL_SIZE=x", "VOL_NEW_SIZE=2"}, errs.ErrInvalid, "VOL_SIZE"},
		{"snapshot", []string{"VOL_NAME=v", "VOL_SNAPSHOT_SIZE=1.5"}, errs.ErrInvalid, "VOL_SNAPSHOT_SIZE"},
		{"open", []string{"VOL_NAME=v", "VOL_OPEN_EXCLUSIVE=maybe"}, errs.ErrInvalid, "neither True nor False"},
	} {
		_, err := parseEnv(k.action, k.env)
		if !errors.Is(err, k.want) || !strings.Contains(err.Error(), k.says) || !strings.HasPrefix(err.Error(), k.action+": ") {
			t.Errorf("parseEnv(%s, %q) = %v, want %v saying %q", k.action, k.env, err, k.want, k.says)
		}
	}
}

// TestRunRefusesBeforeConnecting: a bad environment fails before the
// program looks for archipelago, naming the action, and prints nothing on
// stdout (which Ganeti would read as attach's device).
func TestRunRefusesBeforeConnecting(t *testing.T) {
	t.Setenv("ARCHIPELAGO_CONFIG", "/nonexistent/archipelago.conf")
	var out, errOut bytes.Buffer
	err := run([]string{"/provider/attach"}, []string{"EXTP_PROVIDER=archipelago"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "attach: VOL_NAME is not set") || out.Len() != 0 {
		t.Fatalf("run = %v, stdout %q", err, out.String())
	}
	err = run([]string{"/provider/attach"}, []string{"VOL_NAME=v"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/archipelago.conf") || out.Len() != 0 {
		t.Fatalf("run with a missing configuration = %v, stdout %q", err, out.String())
	}
}

func TestDescribe(t *testing.T) {
	r, err := parseEnv("create", []string{"VOL_NAME=v1", "VOL_SIZE=5", "VOL_CNAME=data", "EXTP_ORIGIN=img", "EXTP_ACCESS=userspace"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.describe(), `volume "v1" (disk data) access=userspace origin=img`; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}
