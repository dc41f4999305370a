package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newImportDiff) }

func newImportDiff(g *globals) *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "import-diff FILE|- NAME [--force] [--json]",
		Short: "Apply a diff in RBD's diff format to a volume, then take its snapshot",
		Long: `import-diff applies FILE (or stdin: -), a diff in RBD's diff format (from rbd
export-diff or vlmc export-diff, version 1 or 2), to volume NAME, as rbd
import-diff does, and then takes the snapshot the diff ends at (NAME
keeps going; the snapshot is its state now):

  - the snapshot the diff starts from must exist, and NAME must still hold
    its content (no change since, by the maps: vlmc diff NAME --from SNAP
    is empty); a diff from nothing needs a NAME with nothing allocated.
    rbd only checks that a snapshot of that name exists; --force skips
    the content check (applies the diff to whatever NAME holds);
  - the snapshot the diff ends at must not exist yet;
  - NAME is resized to the diff's size if it differs (shrunk too);
  - data records are written, zero records trimmed (whole blocks) or
    written as zeros (the ends), and NAME flushed before the snapshot.

A file that breaks the format (truncated, an unknown record in version 1,
a range past the size...) is refused with the byte offset where it breaks,
before anything is changed; from stdin, it is found where it is read, and
NAME may then be partly written (the error says so). A failed import-diff
takes no snapshot. A progress bar is drawn on a terminal; --json prints
what was applied.`,
		Example: `  vlmc create vm1-copy 10G && vlmc import-diff mon.diff vm1-copy   # takes vm1-mon
  vlmc import-diff tue.diff vm1-copy                                  # from vm1-mon to vm1-tue
  rbd export-diff --from-snap mon rbd/vm1@tue - | vlmc import-diff - vm1-disk`,
		Args: cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			src, name := args[0], args[1]
			in, total, err := openInput("import-diff", name, src)
			if err != nil {
				return err
			}
			defer in.Close()
			bar := progress.New(os.Stderr, total, "import-diff "+name, progress.Options{Bytes: true, Quiet: asJSON})
			o := volclient.DiffTransferOptions{Force: force, Source: src, Timeout: c.timeout,
				Progress: func(done, _ uint64) { bar.Set(int64(done)) }}
			ctx, stop := interruptible()
			defer stop()
			st, err := c.vc.ImportDiff(ctx, in, name, o)
			if err != nil {
				return err
			}
			bar.Done()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			if progress.IsTerminal(os.Stderr) {
				to := ""
				if st.To != "" {
					to = ", snapshot " + st.To + " taken"
				}
				fmt.Fprintf(os.Stderr, "%s: diff applied (%d data records, %s; %d zero records, %s)%s in %.1f s\n",
					name, st.Writes, sizes.Format(st.DataBytes), st.Zeros, sizes.Format(st.ZeroBytes), to, st.Seconds)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "apply the diff even if NAME does not hold the content it starts from")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was applied as JSON")
	return cmd
}
