package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newImport) }

func newImport(g *globals) *cobra.Command {
	var size string
	var existing, asJSON bool
	var workers int
	cmd := &cobra.Command{
		Use:   "import FILE|- NAME [--size SIZE] [--existing] [--json]",
		Short: "Copy a raw image (a file or stdin) into a new volume, sparse",
		Long: `import creates volume NAME and copies the raw image FILE (or stdin: -)
into it. The volume's size is the file's rounded up to 512 bytes, or
--size (never smaller than the input; a pipe needs --size). Zero ranges of
the input (a sparse file's holes, and blocks of zeros in any input) are
neither read nor stored: the volume stays thin. The data is durable when
import returns. If the import fails half-way (or is interrupted), the new
volume is removed: nothing half-made is left.

--existing writes into the existing volume NAME instead (at least as large
as the input): its first bytes become the input's, zero ranges included;
the bytes past the input's end stay as they were (as qemu-img convert -n).

Only raw images: a qcow2, qed, vmdk, vdi, vhdx or vpc image is refused with
the qemu-img command that converts it. A progress bar is drawn on a
terminal; --json prints what was done (bytes read, written, zero bytes
skipped, seconds, MiB/s).`,
		Example: `  vlmc import debian-12.raw debian-12-image
  vlmc import disk.raw vm1-disk --size 20G          # a larger volume
  xzcat disk.raw.xz | vlmc import - vm2-disk --size 10G
  vlmc import --existing disk.raw vm1-disk          # overwrite an existing volume
  nbdcopy -- [ qemu-nbd -r -f qcow2 disk.qcow2 ] - | vlmc import - vm3-disk --size 10G`,
		Args: cobra.ExactArgs(2),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			src, name := args[0], args[1]
			var o volclient.ImportOptions
			o.Source, o.Existing, o.Workers, o.Timeout = src, existing, workers, c.timeout
			if size != "" {
				n, err := volumeSize(name, size)
				if err != nil {
					return err
				}
				o.Size = n
			}
			if src == "-" && progress.IsTerminal(os.Stdin) {
				return fmt.Errorf("import into volume %q: stdin is a terminal: pipe an image in, or give a FILE: %w", name, errs.ErrInvalid)
			}
			in, total, err := openInput("import", name, src)
			if err != nil {
				return err
			}
			defer in.Close()
			bar := progress.New(os.Stderr, total, "import "+name, progress.Options{Bytes: true, Quiet: asJSON})
			o.Progress = func(done, _ uint64) { bar.Set(int64(done)) }
			ctx, stop := interruptible()
			defer stop()
			st, err := c.vc.Import(ctx, in, name, o)
			if err != nil {
				return err
			}
			bar.Done()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			if progress.IsTerminal(os.Stderr) {
				fmt.Fprintf(os.Stderr, "%s: %s imported (%s written, %s of zeros skipped) in %.1f s, %.0f MiB/s\n",
					name, sizes.Format(st.InputBytes), sizes.Format(st.BytesWritten), sizes.Format(st.ZeroBytesSkipped),
					st.Seconds, st.MiBPerSecond)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "size of the new volume (default the input's): "+sizes.Help)
	cmd.Flags().BoolVar(&existing, "existing", false, "write into the existing volume NAME instead of creating it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was done as JSON")
	cmd.Flags().IntVar(&workers, "workers", 8, "requests in flight")
	return cmd
}

// interruptible returns a context that SIGINT or SIGTERM ends (the cause
// names the signal), so that a long transfer stops cleanly.
func interruptible() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if s, ok := <-sig; ok {
			cancel(fmt.Errorf("interrupted by %v: %w", s, context.Canceled))
		}
	}()
	return ctx, func() { signal.Stop(sig); close(sig); cancel(nil) }
}
