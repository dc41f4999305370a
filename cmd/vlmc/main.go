// Command vlmc manages volumes for the operator: create, snapshot, clone,
// remove, inspect, lock and map them. Every volume operation goes through
// the volclient API; mapping goes through package mapdev, whose daemon
// (the hidden map-serve subcommand) vlmc also is.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		// A command may ask for its own exit status (check: 1 problems
		// found, 2 could not check); any other failure exits 1.
		var ee *exitError
		if errors.As(err, &ee) {
			fmt.Fprintf(os.Stderr, "vlmc: %v\n", err)
			os.Exit(ee.code)
		}
		daemon.Fatal(err)
	}
}

// exitError is a command's error that asks for its own exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// globals are the root's persistent flags, which every subcommand reads.
type globals struct {
	cfgPath string
	timeout time.Duration
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "vlmc",
		Short: "Create, snapshot, clone, inspect, lock and map Archipelago volumes",
		Long: `vlmc talks to the running peers (see archipelago start) through the segment.
Sizes are in MiB as in the original, or with a unit B, K, M, G, T, P, E
(powers of 1024; KB, KiB mean the same): 512M, 10G, 1T. Anything else is refused.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.cfgPath, "config", "", "configuration file")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 5*time.Minute, "give up on an answer after this long")
	root.AddCommand(
		newCreate(g), newSnapshot(g), newRemove(g), newList(g), newInfo(g),
		newOpen(g), newClose(g), newLock(g), newUnlock(g), newRename(g), newResize(g), newURI(g),
		newMap(g), newUnmap(g), newShowmapped(g), newMapServe(g),
	)
	for _, mk := range lifecycle {
		root.AddCommand(mk(g))
	}
	return root
}

// lifecycle holds the data lifecycle commands (check, gc, du, import,
// export, diff, export-diff, import-diff, flatten, rollback, children):
// each file registers its own in an init function.
var lifecycle []func(g *globals) *cobra.Command

// conn is one command's connection to vlmcd.
type conn struct {
	cfg     *config.Config
	vc      *volclient.Client
	timeout time.Duration
}

// do runs fn with a context that ends after --timeout.
func (c *conn) do(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return fn(ctx)
}

// info asks for volume name's description, within --timeout.
func (c *conn) info(name string) (volclient.Info, error) {
	var vi volclient.Info
	err := c.do(func(ctx context.Context) (err error) {
		vi, err = c.vc.Info(ctx, name)
		return err
	})
	vi.Name = name
	return vi, err
}

// config loads the configuration that --config names.
func (g *globals) config() (*config.Config, error) { return config.Load(g.cfgPath) }

// withConn makes the RunE of a command that talks to vlmcd: it loads the
// configuration, joins the segment and leaves it when fn returns.
func (g *globals) withConn(fn func(cmd *cobra.Command, args []string, c *conn) error) func(cmd *cobra.Command, args []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cfg, err := g.config()
		if err != nil {
			return err
		}
		vc, err := volclient.DialConfig(cfg)
		if err != nil {
			return err
		}
		defer vc.Disconnect()
		return fn(cmd, args, &conn{cfg: cfg, vc: vc, timeout: g.timeout})
	}
}

// volumeSize reads the --size of volume name (package sizes: MiB, or
// with a unit) and checks it against the largest volume, so that a typo
// never reaches vlmcd as another size.
func volumeSize(name, s string) (uint64, error) {
	n, err := sizes.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("volume %q: %w", name, err)
	}
	if n > volclient.MaxSize {
		return 0, fmt.Errorf("volume %q: size %s (%d bytes) beyond the limit of %s (%d bytes): %w",
			name, s, n, sizes.Format(volclient.MaxSize), volclient.MaxSize, errs.ErrTooLarge)
	}
	return n, nil
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
