package main

import (
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/composer"
	"github.com/archipelago-go/archipelago/config"
	"github.com/archipelago-go/archipelago/internal/daemon"
)

// vlmcdCommand is the volume composer daemon.
func vlmcdCommand() *cobra.Command {
	var c daemon.CommonFlags
	var mp, bp int
	cmd := &cobra.Command{
		Use:   "vlmcd",
		Short: "Volume composer: volume READ/WRITE as parallel object I/O",
		Long: `vlmcd serves volume READ and WRITE: it asks the mapper at --mapper-port which
objects cover the range and sends one request per object to the blocker at
--blocker-port, in parallel and without copying. FLUSH waits for the volume's
writes in flight and makes them durable; SNAPSHOT holds the volume's writes
back while the mapper takes it. Other volume operations go to the mapper.`,
		Example: `  vlmcd --portno-start 503 --mapper-port 502 --blocker-port 500
  vlmcd --role vlmcd         # options from the configuration`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, r, err := c.FromConfig(cmd.Flags(), config.TypeVlmcd)
			if err != nil {
				return err
			}
			if r != nil {
				err := daemon.ApplyRole(cmd.Flags(),
					daemon.FromRole("mapper-port", &mp, r.MapperPort),
					daemon.FromRole("blocker-port", &bp, r.BlockerPort),
				)
				if err != nil {
					return err
				}
			}
			return c.RunUntilSignal(composer.New(mp, bp))
		},
	}
	c.Register(cmd.Flags(), "vlmcd")
	cmd.Flags().IntVar(&mp, "mapper-port", 502, "port of the mapper")
	cmd.Flags().IntVar(&bp, "blocker-port", 500, "port of the data blocker")
	return cmd
}
