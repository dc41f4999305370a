package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/sizes"
)

func newInfo(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "info NAME [--json]",
		Short:   "Show a volume's size, kind, parent, epoch, lock owner and snapshots (a snapshot's clones)",
		Example: "  vlmc info vm1-disk\n  vlmc info --json vm1-disk",
		Args:    cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			vi, err := c.info(args[0])
			if err != nil {
				return err
			}
			// The children come from the tree of every header: what info
			// says of the volume itself does not wait for nor depend on it.
			err = c.do(func(ctx context.Context) (err error) {
				vi.Children, err = c.vc.Children(ctx, args[0])
				return err
			})
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "vlmc: info %s: children not known: %v\n", args[0], err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vi)
			}
			kind := "volume (read-write)"
			if vi.ReadOnly {
				kind = "snapshot (read-only)"
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "name:       %s\n", vi.Name)
			fmt.Fprintf(w, "size:       %s (%d bytes)\n", sizes.Format(vi.Size), vi.Size)
			fmt.Fprintf(w, "kind:       %s\n", kind)
			fmt.Fprintf(w, "parent:     %s\n", orNone(vi.Parent))
			fmt.Fprintf(w, "block size: %s\n", sizes.Format(uint64(vi.BlockSize)))
			fmt.Fprintf(w, "epoch:      %d\n", vi.Epoch)
			fmt.Fprintf(w, "locked by:  %s\n", orNone(vi.LockOwner))
			what := "snapshots: "
			if vi.ReadOnly {
				what = "clones:    "
			}
			fmt.Fprintf(w, "%s %s\n", what, orNone(strings.Join(vi.Children, " ")))
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
