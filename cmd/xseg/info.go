package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/xseg"
)

func infoCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "info",
		Short:   "Show a segment's geometry, usage and ports: owners, queue depths, counters",
		Example: "  xseg info --segment archipelago\n  xseg info --all   # unbound ports too",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSegment(cmd, func(s *xseg.Segment) error { return printInfo(cmd, s, all) })
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list unbound ports too")
	return cmd
}

// printInfo prints the segment's geometry and usage, and a line per port
// (bound ones or with requests queued; every port with all).
func printInfo(cmd *cobra.Command, s *xseg.Segment, all bool) error {
	in := s.Info()
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "segment %s: %d MiB, %d ports (dynamic from %d), %d requests (%d free), heap %d/%d KiB used, created by pid %d at %s, %d repairs, %d reclaimed\n",
		in.Name, in.Size>>20, in.Ports, in.DynPorts, in.Requests, in.FreeRequests, in.HeapUsed>>10, in.HeapBytes>>10,
		in.Creator, in.Created.Format("2006-01-02 15:04:05"), in.Repairs, in.Reclaimed)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tROLE\tPID\tSTATE\tSLEEPS ON\tQUEUED\tREPLIES\tINFLIGHT\tSUBMITTED\tSERVED\tFAILED")
	for no := 0; no < in.Ports; no++ {
		ps, err := s.PortStat(no)
		if err != nil {
			return err
		}
		if ps.PID == 0 && !all && ps.Queued == 0 && ps.Replies == 0 {
			continue
		}
		state := "unbound"
		switch {
		case ps.PID != 0 && ps.Alive:
			state = "alive"
		case ps.PID != 0:
			state = "dead"
		}
		sleeps := "-"
		if ps.PID != 0 {
			sleeps = "futex"
			if ps.Doorbell {
				sleeps = "doorbell"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", no, ps.Name, ps.PID, state, sleeps, ps.Queued, ps.Replies, ps.InFlight, ps.Submitted, ps.Served, ps.Failed)
	}
	return tw.Flush()
}
