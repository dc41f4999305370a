package main

import "github.com/spf13/cobra"

func startCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "start [role...]",
		Short: "Start every peer, or the roles named (idempotent)",
		Long: `start starts the peers in ORDER, each role in its own program; the roles of
[PEERS] HOSTED that it starts run together in one archipelagod process.`,
		Example: `  archipelago start            # segment and every peer
  archipelago start blockerb   # one role
  archipelago -u start         # storage peers only`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			return s.Start(cmd.Context(), cmd.OutOrStdout(), args...)
		},
	}
}
