package main

import "github.com/spf13/cobra"

func stopCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "stop [-f] [role]",
		Short: "Stop every peer (in reverse order), or one role",
		Long: `stop sends SIGTERM to each peer and waits for it to finish what is in flight.
It refuses while volumes are mapped or NBD clients are connected, unless -f;
with -f it also kills (SIGKILL) a peer that does not stop within 15 s.
Stopping every peer removes the segment.`,
		Example: `  archipelago stop
  archipelago stop -f vlmcd`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			return s.Stop(cmd.Context(), cmd.OutOrStdout(), force, args...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop even with mapped volumes or NBD clients; kill peers that do not stop")
	return cmd
}
