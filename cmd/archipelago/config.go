package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/config"
)

func configCmd() *cobra.Command {
	var dflt bool
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (or the built-in default)",
		Example: `  archipelago config
  archipelago config --default > /etc/archipelago/archipelago.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dflt {
				fmt.Fprint(cmd.OutOrStdout(), config.DefaultText)
				return nil
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), cfg.Format())
			return nil
		},
	}
	cmd.Flags().BoolVar(&dflt, "default", false, "print the built-in default, commented")
	return cmd
}
