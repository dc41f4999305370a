package main

import "github.com/spf13/cobra"

func statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "One line per role: pid, ports, state, requests in flight; exit 0 only if all run",
		Example: `  archipelago status
  archipelago status || echo "something is down"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			return s.Status(cmd.OutOrStdout())
		},
	}
}
