package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/xseg"
)

func recoverCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "recover",
		Short:   "Reclaim ports and requests left by dead processes now",
		Example: "  xseg recover --segment archipelago",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSegment(cmd, func(s *xseg.Segment) error {
				fmt.Fprintf(cmd.OutOrStdout(), "reclaimed %d requests\n", s.Recover())
				return nil
			})
		},
	}
}
