package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newExportDiff) }

func newExportDiff(g *globals) *cobra.Command {
	var from string
	var force, asJSON bool
	var format int
	cmd := &cobra.Command{
		Use:   "export-diff [--from SNAP] NAME FILE|- [--json]",
		Short: "Write how a volume or snapshot changed since a snapshot in RBD's diff format",
		Long: `export-diff writes to FILE (a new file; an existing one with --force), or to
stdout with -, the changes of volume or snapshot NAME since snapshot SNAP
(--from; without it, all of NAME's data: a full image) in RBD's diff
format, which rbd import-diff reads: the records name SNAP as the diff's
start ("from") and NAME as its end ("to") if NAME is a snapshot, then give
NAME's size, the data of every changed range and the ranges that became
zeros (as vlmc diff lists them, from the maps; data that reads as zeros is
written as a zero range). Export a snapshot: it is what rbd import-diff
and vlmc import-diff recreate at the other end, and it cannot change
while it is read. If export-diff fails, the file it created is removed.
--format 2 writes version 2 of the format (vlmc import-diff reads it, rbd
import-diff does not). A progress bar is drawn on a terminal; --json
prints what was written (to stderr when the diff goes to stdout).`,
		Example: `  vlmc snapshot vm1-disk vm1-mon && vlmc export-diff vm1-mon mon.diff
  vlmc snapshot vm1-disk vm1-tue && vlmc export-diff --from vm1-mon vm1-tue tue.diff
  rbd create --size 10G rbd/vm1 && rbd import-diff mon.diff rbd/vm1 && rbd import-diff tue.diff rbd/vm1
  vlmc export-diff --from vm1-mon vm1-tue - | ssh host2 vlmc import-diff - vm1-copy`,
		Args: cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			name, dst := args[0], args[1]
			out, report := io.Writer(os.Stdout), cmd.OutOrStdout()
			var file *os.File
			if dst == "-" {
				report = os.Stderr
			} else {
				fl := os.O_WRONLY | os.O_CREATE | os.O_EXCL
				if force {
					fl = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
				}
				f, err := os.OpenFile(dst, fl, 0o644)
				if errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("export-diff of volume %q: %s exists: give --force to overwrite it: %w", name, dst, errs.ErrExists)
				}
				if err != nil {
					return fmt.Errorf("export-diff of volume %q: %w", name, err)
				}
				defer f.Close()
				file, out = f, f
			}
			var bar *progress.Bar
			o := volclient.DiffTransferOptions{Version: format, Source: dst, Timeout: c.timeout}
			o.Progress = func(done, total uint64) {
				if bar == nil {
					bar = progress.New(os.Stderr, int64(total), "export-diff "+name, progress.Options{Bytes: true, Quiet: asJSON})
				}
				bar.Set(int64(done))
			}
			ctx, stop := interruptible()
			defer stop()
			st, err := c.vc.ExportDiff(ctx, name, from, out, o)
			if err == nil && file != nil {
				if err = file.Sync(); err == nil {
					err = file.Close()
				}
				if err != nil {
					err = fmt.Errorf("export-diff of volume %q: %w", name, err)
				}
			}
			if err != nil {
				if file != nil {
					if rerr := os.Remove(dst); rerr == nil {
						return fmt.Errorf("%w; %s removed", err, dst)
					}
				}
				return err
			}
			bar.Done()
			if asJSON {
				return printJSON(report, st)
			}
			if progress.IsTerminal(os.Stderr) {
				fmt.Fprintf(os.Stderr, "%s: diff of %s written (%d data records, %s; %d zero records, %s) in %.1f s\n",
					name, sizes.Format(uint64(st.StreamBytes)), st.Writes, sizes.Format(st.DataBytes), st.Zeros, sizes.Format(st.ZeroBytes), st.Seconds)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&from, "from", "", "the snapshot the diff starts from (default: none, a full image)")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "overwrite FILE if it exists")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was written as JSON")
	cmd.Flags().IntVar(&format, "format", 1, "version of the diff format: 1 (rbd import-diff reads it) or 2")
	return cmd
}
