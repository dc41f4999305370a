package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
)

// A flag given on the command line keeps its value; every other row of the
// table stores the role's value, whatever the flag's type.
func TestApplyRoleGivenFlagWins(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var (
		dir     string
		n, m    int
		direct  bool
		timeout time.Duration
	)
	fs.StringVar(&dir, "dir", "flag-default", "")
	fs.IntVar(&n, "n", 1, "")
	fs.IntVar(&m, "m", 2, "")
	fs.BoolVar(&direct, "direct", false, "")
	fs.DurationVar(&timeout, "timeout", time.Second, "")
	// Given with the value of its default: still given, still wins.
	if err := fs.Parse([]string{"--n", "7", "--m=2"}); err != nil {
		t.Fatal(err)
	}
	err := ApplyRole(fs,
		FromRole("dir", &dir, "from-role"),
		FromRole("n", &n, 70),
		FromRole("m", &m, 20),
		FromRole("direct", &direct, true),
		FromRole("timeout", &timeout, time.Minute),
	)
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 || m != 2 {
		t.Errorf("given flags: n=%d m=%d, want 7 and 2 (the command line wins)", n, m)
	}
	if dir != "from-role" || !direct || timeout != time.Minute {
		t.Errorf("flags not given: dir=%q direct=%v timeout=%v, want the role's from-role, true, 1m0s", dir, direct, timeout)
	}
}

// A row naming a flag the program does not define is refused before any
// row is applied: such an option could never be set on the command line.
func TestApplyRoleUnknownFlag(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var a, b string
	fs.StringVar(&a, "a", "A", "")
	err := ApplyRole(fs, FromRole("a", &a, "role"), FromRole("archip-dri", &b, "role"))
	if !errors.Is(err, errs.ErrInvalid) {
		t.Fatalf("row for an undefined flag: err = %v, want ErrInvalid", err)
	}
	if a != "A" || b != "" {
		t.Errorf("after the refusal a=%q b=%q, want A and \"\" (nothing applied)", a, b)
	}
}

// The common options go through the same table: the role's ports, nr_ops
// and log_level and the [XSEG] segment name unless given on the command
// line.
func TestFromConfigCommonFlags(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "archipelago.conf")
	text := "[ARCHIPELAGO]\nRUN_DIR = " + dir + "\n[XSEG]\nSEGMENT_NAME = seg-from-config\n" +
		"[blockerb]\nportno_start = 40\nportno_end = 41\nnr_ops = 9\nlog_level = 3\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var c CommonFlags
	fs := pflag.NewFlagSet("filed", pflag.ContinueOnError)
	c.Register(fs, "filed")
	if err := fs.Parse([]string{"--config", path, "--role", "blockerb", "--portno-end", "45", "--log-level", "1"}); err != nil {
		t.Fatal(err)
	}
	cfg, r, err := c.FromConfig(fs, config.TypeFileBlocker)
	if err != nil {
		t.Fatal(err)
	}
	if r == nil || r.Name != "blockerb" || c.Role != "blockerb" {
		t.Fatalf("role %+v, c.Role %q: want blockerb", r, c.Role)
	}
	if c.PortEnd != 45 || c.LogLevel != 1 {
		t.Errorf("given: portno-end %d, log-level %d; want 45 and 1", c.PortEnd, c.LogLevel)
	}
	if c.PortStart != 40 || c.NrOps != 9 || c.Segment != "seg-from-config" || c.PidFile != cfg.PidFile("blockerb") {
		t.Errorf("from the config: portno-start %d, nr-ops %d, segment %q, pidfile %q; want 40, 9, seg-from-config, %q",
			c.PortStart, c.NrOps, c.Segment, c.PidFile, cfg.PidFile("blockerb"))
	}
}
