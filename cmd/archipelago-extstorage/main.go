// Command archipelago-extstorage is the Ganeti ExtStorage provider of
// Archipelago: one program that acts by the name it is called with.
// The provider directory (/usr/share/ganeti/extstorage/archipelago/)
// holds links named create, attach, detach, remove, grow, setinfo,
// verify, snapshot, open and close to it, and parameters.list. Ganeti
// runs them with no arguments and says what it wants in the environment
// (VOL_NAME, VOL_SIZE, EXTP_ORIGIN, ...); `archipelago-extstorage ACTION`
// does the same by hand.
//
// The volume is VOL_NAME. The installation is the one of
// $ARCHIPELAGO_CONFIG, else /etc/archipelago/archipelago.conf, as for
// vlmc. attach maps the volume through vlmc's map daemon: the vlmc of
// $ARCHIPELAGO_VLMC, else the one next to this program, else the one on
// PATH, else /usr/bin/vlmc.
//
// Each action prints one-line diagnostics naming the volume on stderr
// (Ganeti keeps them in /var/log/ganeti/extstorage/); attach prints the
// device on line 1 of stdout and the volume's NBD URI as a kvm: line.
// Exit status 0 is success.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/volclient"
)

// prog names this program in its messages.
const prog = "archipelago-extstorage"

// opTimeout bounds each question to vlmcd. Ganeti itself waits for ever.
const opTimeout = 2 * time.Minute

const usage = `Usage: ACTION (a link to ` + prog + ` named after the action), or
       ` + prog + ` ACTION
with Ganeti's environment: VOL_NAME, VOL_SIZE (MiB), VOL_NEW_SIZE, VOL_METADATA,
VOL_SNAPSHOT_NAME, VOL_OPEN_EXCLUSIVE, EXTP_ORIGIN, ... (ganeti-extstorage-interface(7)).
Actions: create attach detach remove grow setinfo verify snapshot open close.
The installation: $ARCHIPELAGO_CONFIG, else ` + config.DefaultPath + `.
The map daemon: $ARCHIPELAGO_VLMC, else vlmc next to this program, on PATH, or /usr/bin/vlmc.
`

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help") {
		fmt.Print(usage)
		return
	}
	if err := run(os.Args, os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(1)
	}
}

// provider is one run of an action.
type provider struct {
	req    request
	cfg    *config.Config
	stdout io.Writer
	stderr io.Writer
	vc     *volclient.Client
}

// run does what args and environ ask, printing attach's answer on stdout
// and diagnostics on stderr.
func run(args, environ []string, stdout, stderr io.Writer) error {
	action, err := actionOf(args)
	if err != nil {
		return err
	}
	req, err := parseEnv(action, environ)
	if err != nil {
		return err
	}
	cfg, err := config.Load("")
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	p := &provider{req: req, cfg: cfg, stdout: stdout, stderr: stderr}
	defer p.disconnect()
	do := map[string]func() error{
		"create": p.create, "attach": p.attach, "detach": p.detach, "remove": p.remove,
		"grow": p.grow, "setinfo": p.setinfo, "verify": p.verify, "snapshot": p.snapshot,
		"open": p.open, "close": p.close,
	}[action]
	if err := do(); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// logf prints a diagnostic line: program, action, message.
func (p *provider) logf(format string, args ...any) {
	fmt.Fprintf(p.stderr, "%s %s: %s\n", prog, p.req.Action, fmt.Sprintf(format, args...))
}

// client joins the segment as a client of vlmcd, once per run.
func (p *provider) client() (*volclient.Client, error) {
	if p.vc != nil {
		return p.vc, nil
	}
	vc, err := volclient.DialConfig(p.cfg)
	if err != nil {
		what := ""
		if p.req.Volume != "" {
			what = fmt.Sprintf("volume %q: ", p.req.Volume)
		}
		return nil, fmt.Errorf("%sreach vlmcd of %s (is archipelago running?): %w", what, orDefault(p.cfg.Path), err)
	}
	p.vc = vc
	return vc, nil
}

func (p *provider) disconnect() {
	if p.vc != nil {
		p.vc.Disconnect()
	}
}

// call runs fn with a client and a context that ends after opTimeout.
func (p *provider) call(fn func(ctx context.Context, vc *volclient.Client) error) error {
	vc, err := p.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return fn(ctx, vc)
}

// info returns volume name's description.
func (p *provider) info(name string) (volclient.Info, error) {
	var vi volclient.Info
	err := p.call(func(ctx context.Context, vc *volclient.Client) (err error) {
		vi, err = vc.Info(ctx, name)
		return err
	})
	return vi, err
}

func orDefault(path string) string {
	if path == "" {
		return "the built-in configuration"
	}
	return path
}

// lockVolume serializes this host's attach, detach, remove and close of
// one volume (Ganeti may run them concurrently: two attaches must not map
// the volume twice): an flock on RUN_DIR/extstorage/<volume>.lock, held
// until the returned function runs.
func (p *provider) lockVolume() (func(), error) {
	dir := filepath.Join(p.cfg.RunDir, "extstorage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("volume %q: %w", p.req.Volume, err)
	}
	name := p.req.Volume
	if strings.HasPrefix(name, ".") || len(name) > 200 {
		name = fmt.Sprintf("%x", name) // no hidden files, no name too long
	}
	path := filepath.Join(dir, name+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", p.req.Volume, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("volume %q: lock %s: %w", p.req.Volume, path, err)
	}
	return func() { f.Close() }, nil
}
