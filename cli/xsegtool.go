package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/xseg"
)

// XsegTool is the segment debugging tool: create, destroy, inspect, check
// and recover a segment.
func XsegTool() *cobra.Command {
	var name string
	root := &cobra.Command{
		Use:           "xseg",
		Short:         "Inspect and manage an XSEG shared-memory segment",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&name, "segment", "archipelago", "segment name (under /dev/shm)")

	var cfg xseg.Config
	create := &cobra.Command{
		Use:     "create",
		Short:   "Create a segment",
		Example: "  xseg create --segment archipelago --size 256 --ports 64 --dynports 32",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Name = name
			s, err := xseg.Create(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			return printInfo(cmd, s, false)
		},
	}
	create.Flags().IntVar(&cfg.SizeMiB, "size", 256, "size in MiB")
	create.Flags().IntVar(&cfg.Ports, "ports", 64, "number of ports")
	create.Flags().IntVar(&cfg.DynPorts, "dynports", 32, "first dynamic port")
	create.Flags().IntVar(&cfg.Requests, "requests", 0, "request pool size (0: one per 64 KiB)")

	destroy := &cobra.Command{
		Use:     "destroy",
		Short:   "Remove a segment (processes that have it mapped keep it until they exit)",
		Example: "  xseg destroy --segment archipelago",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return xseg.Destroy(name) },
	}

	var all bool
	info := &cobra.Command{
		Use:     "info",
		Short:   "Show a segment's geometry, usage and ports: owners, queue depths, counters",
		Example: "  xseg info --segment archipelago\n  xseg info --all   # unbound ports too",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSegment(name, func(s *xseg.Segment) error { return printInfo(cmd, s, all) })
		},
	}
	info.Flags().BoolVar(&all, "all", false, "list unbound ports too")

	check := &cobra.Command{
		Use:     "check",
		Short:   "Verify the segment's invariants (heap, rings, request states)",
		Example: "  xseg check --segment archipelago",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSegment(name, func(s *xseg.Segment) error {
				if err := s.Check(); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "ok")
				return nil
			})
		},
	}

	recover := &cobra.Command{
		Use:     "recover",
		Short:   "Reclaim ports and requests left by dead processes now",
		Example: "  xseg recover --segment archipelago",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSegment(name, func(s *xseg.Segment) error {
				fmt.Fprintf(cmd.OutOrStdout(), "reclaimed %d requests\n", s.Recover())
				return nil
			})
		},
	}
	root.AddCommand(create, destroy, info, check, recover, xsegLoad(&name))
	return root
}

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

// withSegment joins the named segment for the length of fn.
func withSegment(name string, fn func(s *xseg.Segment) error) error {
	s, err := xseg.Join(name)
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}
