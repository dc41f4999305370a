// Command archipelago starts, stops and inspects the peers of the
// configuration (package supervisor does the work). One file per
// subcommand.
package main

import (
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/supervisor"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "archipelago",
		Short: "Start, stop and inspect Archipelago's peers",
		Long: `archipelago runs the peers of the configuration (/etc/archipelago/archipelago.conf,
$ARCHIPELAGO_CONFIG or --config; the built-in default when there is no file) as
daemons, in ORDER (stopped in reverse), each with a pidfile under RUN_DIR and a
log under LOG_DIR. With -u, only the storage peers: the block endpoint
(nbd_endpoint roles) is left alone.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "configuration file")
	root.PersistentFlags().BoolP("user", "u", false, "userspace storage peers only (not the block endpoint)")
	root.AddCommand(startCmd(), runCmd(), stopCmd(), restartCmd(), statusCmd(), configCmd())
	return root
}

// loadConfig loads the configuration of the root's --config flag as cmd
// sees it.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return config.Load(path)
}

// newSupervisor loads the configuration and returns its supervisor, with
// the root's --config and -u as cmd sees them.
func newSupervisor(cmd *cobra.Command) (*supervisor.Supervisor, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	path, _ := cmd.Flags().GetString("config")
	user, _ := cmd.Flags().GetBool("user")
	return supervisor.New(cfg, supervisor.Options{ConfigPath: path, StorageOnly: user}), nil
}
