// Command xseg is the segment debugging tool: it creates, destroys,
// inspects, checks and recovers an XSEG segment, and sends load to a port
// (internal/loadgen). One file per subcommand.
package main

import (
	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/daemon"
	"github.com/archipelago-go/archipelago/xseg"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		daemon.Fatal(err)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "xseg",
		Short:         "Inspect and manage an XSEG shared-memory segment",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("segment", "archipelago", "segment name (under /dev/shm)")
	root.AddCommand(createCmd(), destroyCmd(), infoCmd(), checkCmd(), recoverCmd(), loadCmd())
	return root
}

// segmentName is the value of the root's --segment flag as cmd sees it.
func segmentName(cmd *cobra.Command) string {
	name, _ := cmd.Flags().GetString("segment")
	return name
}

// withSegment joins the segment of --segment for the length of fn.
func withSegment(cmd *cobra.Command, fn func(s *xseg.Segment) error) error {
	s, err := xseg.Join(segmentName(cmd))
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}
