package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newGC) }

func newGC(g *globals) *cobra.Command {
	var dryRun, force, asJSON, status bool
	cmd := &cobra.Command{
		Use:   "gc [--dry-run] [--force] [--json] | gc --status [--json]",
		Short: "Collect garbage: delete the map pages and data objects no volume reaches",
		Long: `Delete the map pages and data objects that no volume or snapshot reaches:
those of removed volumes and snapshots, and the leftovers of crashes and of
operations that failed half-way. It runs online, while volumes are written,
snapshotted, cloned, renamed and removed on this host and on others
(docs/gc.md), and prints what it deleted (counts and bytes).

One collection runs per pool at a time. While another host's runs, gc fails
naming that host; if that host is gone for good (its collection was killed),
--force breaks its lock. --dry-run deletes nothing and lists what it would
delete. A progress bar shows on a terminal. The collection is bounded by no
--timeout (each poll of its progress is); interrupting vlmc leaves it running
in mapperd: --status shows how far it is.`,
		Example: `  vlmc gc --dry-run          # what would go, deleting nothing
  vlmc gc                    # collect
  vlmc gc --json | jq .bytes
  vlmc gc --force            # another host's collection was killed and that host is gone
  vlmc gc --status           # the collection running on this host`,
		Args: cobra.NoArgs,
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			w := cmd.OutOrStdout()
			if status {
				var p volclient.GCProgress
				err := c.do(func(ctx context.Context) (err error) {
					p, err = c.vc.GCStatus(ctx)
					return err
				})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(w, p)
				}
				if p.Phase == volclient.GCIdle {
					fmt.Fprintln(w, "no garbage collection running on this host")
					return nil
				}
				fmt.Fprintf(w, "phase %s: listed %d objects, walked %d volumes, %d reachable, %d candidates, deleted %d (%s)\n",
					p.Phase, p.Listed, p.Volumes, p.Reachable, p.Candidates, p.Deleted, sizes.Human(uint64(p.Bytes)))
				return nil
			}
			bar := &gcBar{w: cmd.ErrOrStderr(), quiet: asJSON}
			rep, err := c.vc.GC(context.Background(), volclient.GCOptions{
				DryRun: dryRun, Force: force, Progress: bar.update, PollTimeout: c.timeout,
			})
			bar.done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(w, rep)
			}
			printGCReport(w, cmd.ErrOrStderr(), rep)
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "delete nothing: list what would be deleted")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "break the collector's lock of another host (gone for good)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report (or --status) as JSON")
	cmd.Flags().BoolVar(&status, "status", false, "show the progress of the collection running on this host")
	cmd.MarkFlagsMutuallyExclusive("status", "dry-run")
	cmd.MarkFlagsMutuallyExclusive("status", "force")
	return cmd
}

// gcBar draws the collection's progress on a terminal: a spinner counting
// objects while it lists and marks, a bar of the candidates while it
// sweeps.
type gcBar struct {
	w     io.Writer
	quiet bool
	phase string
	bar   *progress.Bar
}

func (b *gcBar) update(p volclient.GCProgress) {
	if p.Phase != b.phase {
		b.bar.Done()
		total := int64(-1)
		if p.Phase == "sweeping" {
			total = int64(p.Candidates)
		}
		b.bar = progress.New(b.w, total, "gc: "+p.Phase, progress.Options{Quiet: b.quiet})
		b.phase = p.Phase
	}
	switch p.Phase {
	case "listing", "records":
		b.bar.Set(int64(p.Listed))
	case "marking", "markers":
		b.bar.Set(int64(p.Reachable))
	default:
		b.bar.Set(int64(p.Deleted))
	}
}

func (b *gcBar) done() { b.bar.Done() }

// printGCReport prints the report for a person: what went (or would go),
// then the counts; problems go to errw.
func printGCReport(w, errw io.Writer, r *volclient.GCReport) {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	fmt.Fprintf(w, "%s %d objects (%d map pages, %d data objects), %s (%d bytes)\n",
		verb, r.Deleted, r.DeletedPages, r.DeletedData, sizes.Human(uint64(r.Bytes)), r.Bytes)
	fmt.Fprintf(w, "listed %d objects; walked %d volumes; %d reachable; %d unreachable kept (in use by operations in flight)\n",
		r.Listed, r.Volumes, r.Reachable, r.Protected)
	fmt.Fprintf(w, "root markers: %d processed, %d deleted (%d rounds)\n", r.Markers, r.MarkersDeleted, r.Rounds)
	if r.DryRun {
		for _, o := range r.Objects {
			fmt.Fprintf(w, "  %s\n", o)
		}
		if r.ObjectsOmitted > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", r.ObjectsOmitted)
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(errw, "vlmc gc: warning: %s\n", p)
	}
}
