package main

import "github.com/spf13/cobra"

func statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "One line per role: pid, ports, state, requests in flight; exit 0 only if all run",
		Long: `status prints the segment, then one line per role: pid, ports, state (running,
starting, stopped, dead; under 'archipelago run' also restarting and failed),
requests in flight and queued on its ports. While 'archipelago run' supervises,
a line above the table names it with its restarts and failed roles. It exits 0
only if every role runs.

--json prints the same facts as one JSON object: segment, roles (with run's
restarts, crashes, failed and last_exit per role), others (peers on the
segment that no pidfile names), supervisor (run's view, null without run) and
problems (why it exits non-zero).`,
		Example: `  archipelago status
  archipelago status || echo "something is down"
  archipelago status --json | jq -r '.roles[] | select(.state != "running") | .role'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := newSupervisor(cmd)
			if err != nil {
				return err
			}
			if asJSON {
				return s.StatusJSON(cmd.OutOrStdout())
			}
			return s.Status(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object (segment, roles, others, supervisor, problems)")
	return cmd
}
