// Package e2etest runs the operator's programs (archipelago, vlmc) against
// a configuration of a test's own: its own segment, run, log and storage
// directories, so that tests never touch /etc, /run or /var.
package e2etest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/testbin"
	"github.com/archipelago-go/archipelago/nbd/nbduri"
	"github.com/archipelago-go/archipelago/xseg"
)

// Env is one test installation.
type Env struct {
	t       testing.TB
	Dir     string // everything lives below it
	Config  string // the configuration file
	Cfg     *config.Config
	started bool
}

var serial atomic.Int32

// New writes a configuration below a fresh directory: the built-in
// default with its own segment name, RUN_DIR, LOG_DIR, storage and
// HOST_ID, plus extra lines (INI text appended to the file). Cleanup
// stops everything it started.
func New(t testing.TB, hostID string, extra string) *Env {
	t.Helper()
	return NewWith(t, Options{HostID: hostID, Extra: extra})
}

// Options of NewWith.
type Options struct {
	HostID          string
	DataDir, MapDir string // shared storage; default below the Env's Dir
	Extra           string // INI text appended to the file
	// RADOS: blockers are radosd on this pool of the cluster of
	// CephConf, data and maps in namespaces "<Namespace>-data" and
	// "<Namespace>-maps" (DataDir and MapDir are then unused).
	CephConf, Pool, Namespace string
	// Hosted is the value of [PEERS] HOSTED ("all", or role names):
	// the process layout. "" takes it from $ARCHIPELAGO_TEST_HOSTED
	// (HostedEnv), and with that unset too the configuration's own (no
	// role hosted); Split runs every role in its own program whatever
	// the environment says.
	Hosted string
	// NotHosted are roles that run in their own programs in every
	// layout, for a test of what one role's process does alone (its
	// death, its restart): with Hosted (or the environment) "all", every
	// other role is hosted.
	NotHosted []string
}

// HostedEnv names the environment variable that sets the process layout
// of every test's configuration (Options.Hosted): "all" runs every role
// of it in one archipelagod (both hosts' of TwoHosts); "-" (Split) each
// role in its own program; unset or empty, the configuration's own (the
// default's [PEERS] HOSTED).
const HostedEnv = "ARCHIPELAGO_TEST_HOSTED"

// Split is the Options.Hosted of a test that needs every role in its own
// program.
const Split = "-"

// hostedLine is the [PEERS] HOSTED line of o's configuration, whose
// roles are cfg's as loaded without one, "" to leave the configuration's
// own.
func hostedLine(o Options, cfg *config.Config) string {
	h := o.Hosted
	if h == "" {
		h = os.Getenv(HostedEnv)
	}
	var names []string
	switch h {
	case "":
		// The configuration's own layout (its default's, which may host
		// some), less NotHosted.
		if !slices.ContainsFunc(cfg.HostedRoles(), func(r *config.Role) bool { return slices.Contains(o.NotHosted, r.Name) }) {
			return ""
		}
		for _, r := range cfg.HostedRoles() {
			names = append(names, r.Name)
		}
	case Split:
		// Written out, whatever the default hosts.
	case config.HostedAll:
		for _, r := range cfg.Roles {
			names = append(names, r.Name)
		}
	default:
		return "HOSTED = " + h + "\n"
	}
	names = slices.DeleteFunc(names, func(n string) bool { return slices.Contains(o.NotHosted, n) })
	return "HOSTED = " + strings.Join(names, " ") + "\n"
}

// withHosted adds line to the [PEERS] section of extra, or a [PEERS]
// section with it if extra has none.
func withHosted(extra, line string) string {
	if line == "" {
		return extra
	}
	if i := strings.Index(extra, "[PEERS]\n"); i >= 0 {
		i += len("[PEERS]\n")
		return extra[:i] + line + extra[i:]
	}
	return extra + "\n[PEERS]\n" + line
}

// NewWith is New with storage directories of the caller's: two Envs with
// the same directories and different HOST_IDs are two hosts on one shared
// storage.
func NewWith(t testing.TB, o Options) *Env {
	t.Helper()
	dir := t.TempDir()
	if o.DataDir == "" {
		o.DataDir = dir + "/data"
	}
	if o.MapDir == "" {
		o.MapDir = dir + "/maps"
	}
	seg := fmt.Sprintf("clitest-%d-%d", os.Getpid(), serial.Add(1))
	path := filepath.Join(dir, "archipelago.conf")
	cfg := writeConfig(t, path, o, seg, dir, o.Extra)
	// The layout, once the roles are known.
	if line := hostedLine(o, cfg); line != "" {
		cfg = writeConfig(t, path, o, seg, dir, withHosted(o.Extra, line))
	}
	e := &Env{t: t, Dir: dir, Config: path, Cfg: cfg}
	t.Cleanup(func() {
		if e.started {
			out, err := e.Run("archipelago", "stop", "-f")
			if err != nil {
				t.Logf("archipelago stop -f: %v\n%s", err, out)
			}
			if t.Failed() {
				logged := map[string]bool{}
				for _, r := range cfg.Roles {
					if p := cfg.LogFile(r.Name); !logged[p] {
						logged[p] = true
						b, _ := os.ReadFile(p)
						t.Logf("log of %s (%s):\n%s", r.Name, p, b)
					}
				}
			}
		}
		xseg.Destroy(seg)
	})
	return e
}

// writeConfig writes the configuration of NewWith to path and loads it.
func writeConfig(t testing.TB, path string, o Options, seg, dir, extra string) *config.Config {
	t.Helper()
	text := fmt.Sprintf(`[ARCHIPELAGO]
HOST_ID = %s
RUN_DIR = %s/run
LOG_DIR = %s/log

[XSEG]
SEGMENT_NAME = %s
SEGMENT_SIZE = 256

%s
%s`, o.HostID, dir, dir, seg, blockers(o), extra)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// SameProcess returns the roles named and those that run in one process
// with one of them by the configuration (every hosted role, if one named
// is hosted), in ORDER: what a SIGKILL of their processes kills, what
// stops together.
func (e *Env) SameProcess(roles ...string) []string {
	hosted := false
	for _, n := range roles {
		if r, ok := e.Cfg.Role(n); ok && r.Hosted {
			hosted = true
		}
	}
	var out []string
	for _, r := range e.Cfg.Roles {
		if slices.Contains(roles, r.Name) || hosted && r.Hosted {
			out = append(out, r.Name)
		}
	}
	return out
}

// Processes is the number of processes the configuration's roles run in:
// one per role, the hosted ones all in one.
func (e *Env) Processes() int {
	n, hosted := 0, false
	for _, r := range e.Cfg.Roles {
		if !r.Hosted {
			n++
		} else if !hosted {
			n, hosted = n+1, true
		}
	}
	return n
}

// TwoHosts writes the configurations of two hosts, host-a and host-b, on
// one shared storage: o's (directories or a RADOS pool), else directories
// of the test's own. The caller starts them (after changing their
// configurations, if it wants).
func TwoHosts(t testing.TB, o Options) (a, b *Env) {
	t.Helper()
	if o.CephConf == "" && o.DataDir == "" && o.MapDir == "" {
		shared := t.TempDir()
		o.DataDir, o.MapDir = shared+"/data", shared+"/maps"
	}
	o.HostID = "host-a"
	a = NewWith(t, o)
	o.HostID = "host-b"
	b = NewWith(t, o)
	return a, b
}

func blockers(o Options) string {
	if o.CephConf == "" {
		return fmt.Sprintf("[blockerb]\narchip_dir = %s\n\n[blockerm]\narchip_dir = %s\n", o.DataDir, o.MapDir)
	}
	var b strings.Builder
	for _, r := range []string{"blockerb", "blockerm"} {
		fmt.Fprintf(&b, "[%s]\ntype = rados_blocker\npool = %s\nceph_conf = %s\nnamespace = %s-%s\n\n", r, o.Pool, o.CephConf, o.Namespace, r[len(r)-1:])
	}
	return b.String()
}

// Run runs a program of the project with --config and returns its
// combined output.
func (e *Env) Run(prog string, args ...string) (string, error) {
	e.t.Helper()
	cmd := exec.Command(testbin.Path(e.t, prog), append([]string{"--config", e.Config}, args...)...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		<-done
		err = fmt.Errorf("%s %v timed out", prog, args)
	}
	return string(out), err
}

// Must runs a program and fails the test if it fails; it returns the
// output, trimmed.
func (e *Env) Must(prog string, args ...string) string {
	e.t.Helper()
	out, err := e.Run(prog, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// Start runs `archipelago start`.
func (e *Env) Start() {
	e.t.Helper()
	e.started = true
	e.Must("archipelago", "start")
}

// Socket is the NBD socket of the first block endpoint.
func (e *Env) Socket() string {
	return e.Cfg.RolesOfType(config.TypeNBDEndpoint)[0].Socket
}

// URI is the NBD URI of volume vol at the first block endpoint (what
// `vlmc uri` prints).
func (e *Env) URI(vol string) string { return nbduri.URI(e.Socket(), vol) }
