package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newExport) }

func newExport(g *globals) *cobra.Command {
	var force, asJSON bool
	var workers int
	cmd := &cobra.Command{
		Use:   "export NAME FILE|- [--force] [--json]",
		Short: "Copy a volume or snapshot into a raw image file (sparse) or stdout",
		Long: `export writes volume or snapshot NAME as a raw image into FILE, a new file
(an existing one only with --force), sparse: the volume's zero blocks and
zero ranges are holes in the file, whose size is the volume's. With - the
image goes to stdout, zeros written (a pipe cannot be sparse; stdout
redirected to a new file is written sparse). A device or FIFO is written
whole. The file is synced when export returns; if export fails, the file
it created is removed. Export a snapshot for a consistent image of a
volume in use. A progress bar is drawn on a terminal; --json prints what
was done (to stderr when the image goes to stdout).`,
		Example: `  vlmc export debian-12-image debian-12.raw
  vlmc snapshot vm1-disk vm1-backup && vlmc export vm1-backup vm1.raw
  vlmc export vm1-backup - | zstd > vm1.raw.zst
  vlmc export vm1-backup - | ssh host2 vlmc import - vm1-disk --size 10G`,
		Args: cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			name, dst := args[0], args[1]
			out, report := os.Stdout, cmd.OutOrStdout()
			created := false
			if dst == "-" {
				if progress.IsTerminal(os.Stdout) {
					return fmt.Errorf("export of volume %q: stdout is a terminal: redirect it, or give a FILE: %w", name, errs.ErrInvalid)
				}
				report = os.Stderr
			} else {
				fl := os.O_WRONLY | os.O_CREATE | os.O_EXCL
				st, err := os.Stat(dst)
				switch {
				case err == nil && st.Mode().IsRegular():
					if !force {
						return fmt.Errorf("export of volume %q: %s exists: give --force to overwrite it: %w", name, dst, errs.ErrExists)
					}
					fl = os.O_WRONLY | os.O_TRUNC
				case err == nil:
					fl = os.O_WRONLY // a device, a FIFO
				case !errors.Is(err, fs.ErrNotExist):
					return fmt.Errorf("export of volume %q: %w", name, err)
				}
				f, err := os.OpenFile(dst, fl, 0o644)
				if err != nil {
					return fmt.Errorf("export of volume %q: %w", name, err)
				}
				defer f.Close()
				out, created = f, fl&os.O_CREATE != 0 || fl&os.O_TRUNC != 0
			}
			o := volclient.ExportOptions{Workers: workers, Timeout: c.timeout}
			var bar *progress.Bar
			o.Progress = func(done, total uint64) {
				if bar == nil {
					bar = progress.New(os.Stderr, int64(total), "export "+name, progress.Options{Bytes: true, Quiet: asJSON})
				}
				bar.Set(int64(done))
			}
			ctx, stop := interruptible()
			defer stop()
			st, err := c.vc.Export(ctx, name, out, o)
			if err != nil {
				if created {
					if rerr := os.Remove(dst); rerr == nil {
						return fmt.Errorf("%w; %s removed", err, dst)
					}
				}
				return err
			}
			bar.Done()
			if dst != "-" {
				if err := out.Close(); err != nil {
					return fmt.Errorf("export of volume %q: %w", name, err)
				}
			}
			if asJSON {
				return printJSON(report, st)
			}
			if progress.IsTerminal(os.Stderr) {
				fmt.Fprintf(os.Stderr, "%s: %s exported (%s written, %s of zeros skipped) in %.1f s, %.0f MiB/s\n",
					name, sizes.Format(st.VolumeSize), sizes.Format(st.BytesWritten), sizes.Format(st.ZeroBytesSkipped),
					st.Seconds, st.MiBPerSecond)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "overwrite FILE if it exists")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was done as JSON")
	cmd.Flags().IntVar(&workers, "workers", 8, "requests in flight")
	return cmd
}
