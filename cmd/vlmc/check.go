package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newCheck) }

// Exit statuses of vlmc check (as grep and diff: 1 found, 2 trouble).
const (
	checkExitProblems = 1 // the check ran and found problems
	checkExitFailed   = 2 // it could not check (vlmcd unreachable, a name of no volume, storage errors)
)

func newCheck(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check [NAME...] [--json]",
		Short: "Check the maps of volumes and snapshots, and the objects they reach (read-only, online)",
		Long: `Walks the headers, map pages and epoch records of the volumes and snapshots
named (all if none) and looks for every data object their maps reach, and
reports every violation found, one line each: the volume, the kind of problem,
the object, and what is wrong. Kinds: unreadable (a header, map page or epoch
record of which no copy can be read), dangling (a map page named that does not
exist), damaged-copy (one of the two copies of a map object is damaged, torn or
stale: the other is read), owned-below-shared, owned-twice, owned-shared (an
object written in place by one volume while another reaches it), beyond-size,
bad-prefix (map entries that name nothing valid), missing-data (a mapped data
object that does not exist: the block reads as zeros), epoch-behind and
epoch-missing (an epoch record that could hand out names in use).

It writes nothing (no repair) and takes no lock: it runs while volumes are
used, here and on other hosts. What it finds is looked at again after a pause
before it is reported, so that a change in progress is not taken for damage; a
volume removed or renamed meanwhile is skipped. Shared objects are checked
against the other volumes checked: check all of them to check all sharing.
It reads every map page and looks for every data object (no data is read):
on a large pool give it a longer --timeout.

Exit status: 0 nothing found, 1 problems found, 2 the check could not be done.`,
		Example: `  vlmc check
  vlmc check vm1-disk vm1-disk@monday
  vlmc check --json | jq -r '.problems[] | "\(.volume) \(.kind) \(.object)"'`,
		Args: cobra.ArbitraryArgs,
	}
	run := g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
		bar := &checkBar{w: os.Stderr, quiet: asJSON || len(args) == 1}
		var rep *volclient.CheckReport
		err := c.do(func(ctx context.Context) (err error) {
			rep, err = c.vc.CheckProgress(ctx, args, bar.update)
			return err
		})
		bar.done()
		if err != nil {
			return err
		}
		if asJSON {
			if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
		} else {
			printCheckReport(cmd.OutOrStdout(), rep)
		}
		if n := rep.Found(); n > 0 {
			return &exitError{checkExitProblems, fmt.Errorf("check: %s", problemsFound(n))}
		}
		return nil
	})
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		var ee *exitError
		if err != nil && !errors.As(err, &ee) {
			err = &exitError{checkExitFailed, err}
		}
		return err
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{checkExitFailed, err} })
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// checkBar draws the check's progress (volumes done) on a terminal.
type checkBar struct {
	w     io.Writer
	quiet bool
	bar   *progress.Bar
}

func (b *checkBar) update(p volclient.CheckProgress) {
	if b.bar == nil {
		b.bar = progress.New(b.w, int64(p.Total), "check", progress.Options{Quiet: b.quiet})
	}
	b.bar.Set(int64(p.Done))
}

func (b *checkBar) done() { b.bar.Done() }

// printCheckReport prints one line per problem (volume, kind, object,
// detail) and a summary line.
func printCheckReport(w io.Writer, r *volclient.CheckReport) {
	for _, p := range r.Problems {
		fmt.Fprintf(w, "%s: %s: %s: %s\n", p.Volume, p.Kind, p.Object, p.Detail)
	}
	found := problemsFound(r.Found())
	if r.Omitted > 0 {
		found += fmt.Sprintf(" (%d not listed: at most 100 of a kind per volume)", r.Omitted)
	}
	fmt.Fprintf(w, "checked %d volumes, %d map pages, %d data objects: %s\n", r.Volumes, r.Pages, r.DataObjects, found)
}

func problemsFound(n int) string {
	switch n {
	case 0:
		return "no problems found"
	case 1:
		return "1 problem found"
	}
	return fmt.Sprintf("%d problems found", n)
}
