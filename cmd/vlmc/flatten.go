package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/progress"
	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newFlatten) }

func newFlatten(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "flatten NAME [--json]",
		Short: "Make a clone independent of its parent snapshot (copies the blocks it shares)",
		Long: `Copy every block the volume shares with its parent snapshot to objects of
its own, while the volume stays in use (mapped, NBD clients), then forget the
parent. Afterwards the parent snapshot can be removed, and a garbage
collection (vlmc gc) frees its space. Zero blocks stay free. A progress bar
shows on a terminal. Interrupted, flatten can be run again; what was copied
stays copied. A volume that is not a clone shares blocks only with its own
snapshots: flatten makes them its own (the snapshots keep theirs).`,
		Example: `  vlmc flatten vm1-disk
  vlmc remove golden-image-snap && vlmc gc    # now frees the parent's space
  vlmc flatten --json vm1-disk | jq .copied`,
		Args: cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			name := args[0]
			var bar *progress.Bar // drawn once the size is known
			res, err := c.vc.Flatten(context.Background(), name, volclient.FlattenOptions{
				RequestTimeout: c.timeout, // each range; the whole is bound by none
				Progress: func(done, total uint64) {
					if bar == nil {
						bar = progress.New(cmd.ErrOrStderr(), int64(total), "flatten "+name, progress.Options{Bytes: true, Quiet: asJSON})
					}
					bar.Set(int64(done))
				},
			})
			bar.Done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			from := "its snapshots"
			if res.Parent != "" {
				from = fmt.Sprintf("parent %s", res.Parent)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: copied %s shared with %s; it depends on no snapshot now\n",
				name, sizes.Human(res.Copied), from)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON with name, parent, size, copied")
	return cmd
}
