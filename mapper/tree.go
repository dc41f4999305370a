package mapper

import (
	"context"

	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
	"github.com/archipelago-go/archipelago/xseg"
)

// TREE (pool-wide, no target) answers every volume and snapshot with its
// links (volume.Engine.Tree): a clone's parent snapshot, a snapshot's
// origin volume, each node's children.
func init() { docOps[xseg.OpTree] = serveTree }

// treeNode is a volume.Node as JSON (volclient.TreeNode mirrors it).
type treeNode struct {
	Name     string   `json:"name"`
	Snapshot bool     `json:"snapshot"`
	Size     uint64   `json:"size"`
	Parent   string   `json:"parent,omitempty"`
	Origin   string   `json:"origin,omitempty"`
	Gone     bool     `json:"gone,omitempty"`
	Children []string `json:"children"`
	Err      string   `json:"error,omitempty"`
}

func serveTree(ctx context.Context, m *Mapper, e *volume.Engine, r *xseg.Request, req *wire.Doc) (any, error) {
	nodes, err := e.Tree(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]treeNode, len(nodes))
	for i, n := range nodes {
		out[i] = treeNode{Name: n.Name, Snapshot: n.Snapshot, Size: n.Size, Parent: n.Parent, Origin: n.Origin,
			Gone: n.Gone, Children: n.Children, Err: n.Err}
		if out[i].Children == nil {
			out[i].Children = []string{}
		}
	}
	return out, nil
}
