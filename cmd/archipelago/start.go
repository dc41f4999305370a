package main

import "github.com/spf13/cobra"

func startCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "start [role]",
		Short: "Start every peer, or one role (idempotent)",
		Example: `  archipelago start            # segment and every peer
  archipelago start blockerb   # one role
  archipelago -u start         # storage peers only`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			return s.Start(cmd.Context(), cmd.OutOrStdout(), args...)
		},
	}
}
