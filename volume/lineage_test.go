package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// treeString prints the tree as name<up[!]> lines in name order (! for
// an origin or parent that is gone), with each node's children.
func treeString(t *testing.T, e *Engine) string {
	t.Helper()
	nodes, err := e.Tree(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, n := range nodes {
		up := n.Parent
		if n.Snapshot {
			up = n.Origin
		}
		if n.Gone {
			up += "!"
		}
		fmt.Fprintf(&b, "%s<%s> %v\n", n.Name, up, n.Children)
	}
	return b.String()
}

func TestTree(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	e := v.e
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Create(ctx, "vol", 10*modelBS))
	must(writeVol(ctx, e, v.dataStore(), "vol", 0, fill('a', modelBS)))
	must(e.Snapshot(ctx, "vol", "snap1"))
	must(e.Clone(ctx, "snap1", "clone1", 0))
	must(writeVol(ctx, e, v.dataStore(), "clone1", 0, fill('b', modelBS)))
	must(e.Snapshot(ctx, "clone1", "snap2"))
	must(e.Clone(ctx, "snap2", "clone2", 0))
	must(e.Snapshot(ctx, "vol", "snap3"))
	must(e.Create(ctx, "lone", modelBS))
	want := `clone1<snap1> [snap2]
clone2<snap2> []
lone<> []
snap1<vol> [clone1]
snap2<clone1> [clone2]
snap3<vol> []
vol<> [snap1 snap3]
`
	if got := treeString(t, e); got != want {
		t.Fatalf("tree:\n%s\nwant:\n%s", got, want)
	}
	// A renamed volume is still its snapshots' origin, found by epochs
	// (the snapshots' headers still name "vol").
	must(e.Rename(ctx, "vol", "vol-renamed"))
	must(writeVol(ctx, e, v.dataStore(), "vol-renamed", 0, fill('c', modelBS)))
	// A new volume under the old name is not.
	must(e.Clone(ctx, "snap2", "vol", 0))
	// A removed snapshot leaves its clone a root, its parent gone.
	must(e.Remove(ctx, "snap2"))
	want = `clone1<snap1> []
clone2<snap2!> []
lone<> []
snap1<vol-renamed> [clone1]
snap3<vol-renamed> []
vol<snap2!> []
vol-renamed<> [snap1 snap3]
`
	if got := treeString(t, e); got != want {
		t.Fatalf("tree after renames and removes:\n%s\nwant:\n%s", got, want)
	}
	kids, err := e.Children(ctx, "vol-renamed")
	must(err)
	if !slices.Equal(kids, []string{"snap1", "snap3"}) {
		t.Fatalf("children of vol-renamed: %v", kids)
	}
	// Flatten makes a clone a root.
	must(flattenAllErr(ctx, e, "clone1"))
	if got := treeString(t, e); !strings.Contains(got, "clone1<> []\n") || !strings.Contains(got, "snap1<vol-renamed> []\n") {
		t.Fatalf("tree after flatten of clone1:\n%s", got)
	}
}

func flattenAllErr(ctx context.Context, e *Engine, name string) error {
	in, err := e.Info(ctx, name)
	if err != nil {
		return err
	}
	_, err = flattenAll(ctx, e, name, in.Size, 64*uint64(in.BlockSize))
	return err
}
