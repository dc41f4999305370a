package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/volclient"
)

func init() { lifecycle = append(lifecycle, newChildren) }

func newChildren(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "children NAME [--json]",
		Short: "List a volume's snapshots, or a snapshot's clones",
		Example: `  vlmc children golden-image-snap      # the clones made of it
  vlmc children vm1-disk               # its snapshots`,
		Args: cobra.ExactArgs(1),
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			var kids []string
			err := c.do(func(ctx context.Context) (err error) {
				kids, err = c.vc.Children(ctx, args[0])
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), kids)
			}
			for _, k := range kids {
				fmt.Fprintln(cmd.OutOrStdout(), k)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON list of names")
	return cmd
}

// printTree draws the nodes as a tree: each root (a volume, or a node
// whose parent or origin is gone) with its snapshots, their clones, and
// so on.
func printTree(w io.Writer, nodes []volclient.TreeNode) {
	byName := make(map[string]volclient.TreeNode, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	label := func(n volclient.TreeNode) string {
		var notes []string
		if n.Snapshot {
			notes = append(notes, "snapshot")
		}
		switch {
		case n.Err != "":
			notes = append(notes, "unreadable: "+n.Err)
		case n.Gone && n.Snapshot:
			notes = append(notes, "of "+n.Origin+", gone")
		case n.Gone:
			notes = append(notes, "clone of "+n.Parent+", gone")
		}
		if len(notes) == 0 {
			return n.Name
		}
		return n.Name + " (" + strings.Join(notes, "; ") + ")"
	}
	seen := map[string]bool{}
	var draw func(name, indent string, last, root bool)
	draw = func(name, indent string, last, root bool) {
		n, ok := byName[name]
		if !ok || seen[name] {
			return
		}
		seen[name] = true
		next := indent
		switch {
		case root:
			fmt.Fprintln(w, label(n))
		case last:
			fmt.Fprintln(w, indent+"└── "+label(n))
			next += "    "
		default:
			fmt.Fprintln(w, indent+"├── "+label(n))
			next += "│   "
		}
		for i, k := range n.Children {
			draw(k, next, i == len(n.Children)-1, false)
		}
	}
	for _, n := range nodes {
		if n.Up() == "" {
			draw(n.Name, "", true, true)
		}
	}
	for _, n := range nodes { // anything left (a loop the links should not make)
		draw(n.Name, "", true, true)
	}
}
