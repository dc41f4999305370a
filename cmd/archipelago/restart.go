package main

import "github.com/spf13/cobra"

func restartCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "restart [role...]",
		Short:   "Stop, then start every peer, or the roles named",
		Example: "  archipelago restart\n  archipelago restart mapperd",
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			return s.Restart(cmd.Context(), cmd.OutOrStdout(), force, args...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "as for stop")
	return cmd
}
