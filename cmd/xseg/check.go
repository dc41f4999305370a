package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/xseg"
)

func checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "check",
		Short:   "Verify the segment's invariants (heap, rings, request states)",
		Example: "  xseg check --segment archipelago",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSegment(cmd, func(s *xseg.Segment) error {
				if err := s.Check(); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "ok")
				return nil
			})
		},
	}
}
