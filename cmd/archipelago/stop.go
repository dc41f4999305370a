package main

import "github.com/spf13/cobra"

func stopCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "stop [-f] [role...]",
		Short: "Stop every peer (in reverse order), or the roles named",
		Long: `stop sends SIGTERM to each peer and waits for it to finish what is in flight.
It refuses while volumes are mapped or NBD clients are connected, unless -f;
with -f it also kills (SIGKILL) a peer that does not stop within 15 s.
Stopping every peer removes the segment. The roles of one archipelagod
process ([PEERS] HOSTED) stop together: stopping some of them without the
others is refused.`,
		Example: `  archipelago stop
  archipelago stop -f vlmcd
  archipelago stop mapperd vlmcd   # two roles`,
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
