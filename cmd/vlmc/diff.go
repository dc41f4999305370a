package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newDiff) }

func newDiff(g *globals) *cobra.Command {
	var from string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff NAME [--from SNAP] [--json]",
		Short: "List the ranges of a volume or snapshot that changed since a snapshot",
		Long: `diff lists the byte ranges of volume or snapshot NAME that differ from
snapshot SNAP (--from; without it, every allocated range), one per line:
"offset length data" for a range to copy from NAME, "offset length zero"
for one that reads as zeros now and had data in SNAP. The answer comes
from the maps, not from the data: a range counts as changed when it was
written (even with the same bytes), trimmed or cut since the snapshot, in
whole blocks; a trim of a range that was zero already is no change.
Ranges past SNAP's size are data where NAME holds data. A summary goes to
stderr; --json prints the ranges and totals as one document. Diff a
snapshot for an answer that cannot change while it is read.`,
		Example: `  vlmc diff vm1-disk --from vm1-disk@mon
  vlmc diff vm1-disk@tue --from vm1-disk@mon --json
  vlmc diff vm1-disk@mon                # every allocated range`,
		Args: cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			ctx, stop := interruptible()
			defer stop()
			rep, err := c.vc.DiffReport(ctx, args[0], from)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			w := cmd.OutOrStdout()
			for _, x := range rep.Extents {
				fmt.Fprintf(w, "%d %d %s\n", x.Offset, x.Size, diffKind(x))
			}
			since := "from nothing"
			if from != "" {
				since = "since " + from
			}
			fmt.Fprintf(os.Stderr, "%s (%s) %s: %d ranges, %s of data, %s of zeros\n", rep.Name, sizes.Format(rep.Size),
				since, len(rep.Extents), sizes.Format(rep.DataBytes), sizes.Format(rep.ZeroBytes))
			return nil
		}),
	}
	cmd.Flags().StringVar(&from, "from", "", "the snapshot to compare with (default: none, every allocated range)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the ranges and totals as JSON")
	return cmd
}

func diffKind(x volclient.DiffExtent) string {
	if x.Zero {
		return "zero"
	}
	return "data"
}
