package main

import (
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/xseg"
)

func destroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "destroy",
		Short:   "Remove a segment (processes that have it mapped keep it until they exit)",
		Example: "  xseg destroy --segment archipelago",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return xseg.Destroy(segmentName(cmd)) },
	}
}
