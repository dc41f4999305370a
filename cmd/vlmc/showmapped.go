package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/mapdev"
)

func newShowmapped(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "showmapped [--json]",
		Short: "List the mapped volumes: id, volume, device, daemon pid, state",
		Example: `  vlmc showmapped
  vlmc showmapped --json | jq -r '.[].device'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.config()
			if err != nil {
				return err
			}
			ms, err := mapdev.List(cfg)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, ms)
			}
			if len(ms) == 0 {
				fmt.Fprintln(w, "no volumes mapped")
				return nil
			}
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVOLUME\tDEVICE\tPID\tMODE\tSTATE")
			for _, m := range ms {
				mode := "rw"
				if m.ReadOnly {
					mode = "ro"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.Volume, m.Device, m.PID, mode, m.Status)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON records (id, volume, device, pid, mountpoint, readonly, state)")
	return cmd
}
