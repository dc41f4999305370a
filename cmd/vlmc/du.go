package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/internal/sizes"
	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newDu) }

func newDu(g *globals) *cobra.Command {
	var asJSON, inBytes, held bool
	cmd := &cobra.Command{
		Use:   "du [NAME...] [--json] [--bytes] [--held]",
		Short: "Show the exact space of volumes and snapshots: provisioned, mapped, exclusive, shared",
		Long: `For each volume and snapshot named (all if none): its size (PROVISIONED), the
bytes of the data objects its map reaches (MAPPED), those no other volume or
snapshot reaches (EXCLUSIVE: what removing it frees, after a gc) and the rest
(SHARED with its parent, its snapshots, their clones). The TOTAL line is the
pool's, whatever names are given: the volumes' sizes, and every data object
reached counted once (EXCLUSIVE: reached by one volume or snapshot; SHARED: by
more). Map pages (metadata) are counted apart.

The figures are exact: sums of the sizes of the objects the maps reach, read
from the storage (one stat per object), never estimates; no data is read.
--held lists the storage too and shows what it holds and what nothing
reaches (garbage: vlmc gc frees it). On a pool in use the figures mix the
moments each map was read.`,
		Example: `  vlmc du
  vlmc du vm1-disk vm1-disk@monday --bytes
  vlmc du --held                       # and what the storage holds, garbage included
  vlmc du --json | jq '.volumes[] | {name, exclusive: .data.exclusive_bytes}'`,
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			var rep *volclient.UsageReport
			err := c.do(func(ctx context.Context) (err error) {
				rep, err = c.vc.Usage(ctx, args, volclient.UsageOptions{Held: held})
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			printUsage(cmd.OutOrStdout(), rep, inBytes)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON (sizes in bytes)")
	cmd.Flags().BoolVar(&inBytes, "bytes", false, "print sizes in bytes")
	cmd.Flags().BoolVar(&held, "held", false, "also list the storage: what it holds, and what no volume reaches")
	return cmd
}

// printUsage prints du's table, the TOTAL line and the pool's lines.
func printUsage(w io.Writer, rep *volclient.UsageReport, inBytes bool) {
	size := sizes.Human
	if inBytes {
		size = func(n uint64) string { return strconv.FormatUint(n, 10) }
	}
	rows := [][]string{{"NAME", "PROVISIONED", "MAPPED", "EXCLUSIVE", "SHARED"}}
	for _, v := range rep.Volumes {
		rows = append(rows, []string{v.Name, size(v.Provisioned),
			size(v.Data.Bytes), size(v.Data.ExclusiveBytes), size(v.Data.SharedBytes)})
	}
	p := rep.Pool
	rows = append(rows, []string{"TOTAL", size(p.Provisioned),
		size(p.Data.Bytes), size(p.Data.ExclusiveBytes), size(p.Data.SharedBytes)})
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s", width[0], r[0]) // names left, sizes right
		for i, c := range r[1:] {
			fmt.Fprintf(w, "  %*s", width[i+1], c)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "pool: %d volumes, %d snapshots; %d data objects, %d map pages (%s)\n",
		p.Volumes, p.Snapshots, p.Data.Objects, p.Map.Objects, size(p.Map.Bytes))
	if p.Missing > 0 {
		fmt.Fprintf(w, "missing: %d data objects mapped and never written (they read as zeros)\n", p.Missing)
	}
	if h := p.Held; h != nil {
		fmt.Fprintf(w, "held: data %s in %d objects, map pages %s in %d, other metadata %s in %d\n",
			size(h.Data.Bytes), h.Data.Objects, size(h.Map.Bytes), h.Map.Objects, size(h.Other.Bytes), h.Other.Objects)
		fmt.Fprintf(w, "unreachable: data %s in %d objects, map pages %s in %d (vlmc gc frees them)\n",
			size(h.UnreachableData.Bytes), h.UnreachableData.Objects, size(h.UnreachableMap.Bytes), h.UnreachableMap.Objects)
	}
}
