package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
)

func newList(g *globals) *cobra.Command {
	var asJSON, tree bool
	cmd := &cobra.Command{
		Use:     "list [--json] [--tree]",
		Short:   "List volumes and snapshots, one name per line",
		Example: "  vlmc list\n  vlmc list --json | jq '.[] | select(.readonly)'\n  vlmc list --tree    # volumes, their snapshots, their clones, ...",
		Args:    cobra.NoArgs,
		RunE: g.withConn(func(cmd *cobra.Command, args []string, c *conn) error {
			if tree {
				var nodes []volclient.TreeNode
				err := c.do(func(ctx context.Context) (err error) {
					nodes, err = c.vc.Tree(ctx)
					return err
				})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), nodes)
				}
				printTree(cmd.OutOrStdout(), nodes)
				return nil
			}
			var names []string
			err := c.do(func(ctx context.Context) (err error) {
				names, err = c.vc.List(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if !asJSON {
				for _, n := range names {
					fmt.Fprintln(cmd.OutOrStdout(), n)
				}
				return nil
			}
			out := []volclient.Info{}
			for _, n := range names {
				vi, err := c.info(n)
				if errors.Is(err, errs.ErrNotFound) {
					continue // removed meanwhile
				}
				if err != nil {
					return err
				}
				out = append(out, vi)
			}
			return printJSON(cmd.OutOrStdout(), out)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON with name, size, readonly, parent, lock_owner")
	cmd.Flags().BoolVar(&tree, "tree", false, "show snapshots and clones as a tree (with --json: the nodes, with parent, origin, children)")
	return cmd
}
