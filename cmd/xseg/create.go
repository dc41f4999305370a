package main

import (
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/xseg"
)

func createCmd() *cobra.Command {
	var cfg xseg.Config
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create a segment",
		Example: "  xseg create --segment archipelago --size 256 --ports 64 --dynports 32",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Name = segmentName(cmd)
			s, err := xseg.Create(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			return printInfo(cmd, s, false)
		},
	}
	cmd.Flags().IntVar(&cfg.SizeMiB, "size", 256, "size in MiB")
	cmd.Flags().IntVar(&cfg.Ports, "ports", 64, "number of ports")
	cmd.Flags().IntVar(&cfg.DynPorts, "dynports", 32, "first dynamic port")
	cmd.Flags().IntVar(&cfg.Requests, "requests", 0, "request pool size (0: one per 64 KiB)")
	return cmd
}
