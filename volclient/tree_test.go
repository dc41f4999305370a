package volclient_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// TestFlattenRollbackTree: Flatten, Rollback, Tree and Children through
// vlmcd and mapperd: the documents on the wire, the ranges and progress
// of a flatten, and the refusals' sentinels.
func TestFlattenRollbackTree(t *testing.T) {
	const bs = 64 << 10
	s := stacktest.Start(t, stacktest.Options{BlockSize: bs})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "v", 40*bs))
	one, two := testutil.Pattern(3*bs, 1), testutil.Pattern(bs, 2)
	s.Write(t, "v", 0, one, false)
	s.Write(t, "v", 30*bs, two, false)
	ok(t, "Snapshot", c.Snapshot(ctx, "v", "v@1"))
	ok(t, "Clone", c.Clone(ctx, "v@1", "c", 0))
	s.Write(t, "v", 0, testutil.Pattern(bs, 3), false)

	nodes, err := c.Tree(ctx)
	ok(t, "Tree", err)
	want := []volclient.TreeNode{
		{Name: "c", Size: 40 * bs, Parent: "v@1", Children: []string{}},
		{Name: "v", Size: 40 * bs, Children: []string{"v@1"}},
		{Name: "v@1", Snapshot: true, Size: 40 * bs, Origin: "v", Children: []string{"c"}},
	}
	if !slices.EqualFunc(nodes, want, func(a, b volclient.TreeNode) bool {
		return a.Name == b.Name && a.Snapshot == b.Snapshot && a.Size == b.Size && a.Parent == b.Parent &&
			a.Origin == b.Origin && !a.Gone && slices.Equal(a.Children, b.Children)
	}) {
		t.Fatalf("Tree: %+v\nwant %+v", nodes, want)
	}
	kids, err := c.Children(ctx, "v@1")
	ok(t, "Children", err)
	if !slices.Equal(kids, []string{"c"}) {
		t.Fatalf("Children v@1: %v", kids)
	}
	_, err = c.Children(ctx, "nope")
	fails(t, "Children of nothing", err, errs.ErrNotFound, "nope")

	// Flatten in ranges of 7 blocks: progress after each, up to the size.
	var seen []uint64
	res, err := c.Flatten(ctx, "c", volclient.FlattenOptions{Step: 7 * bs, Progress: func(done, total uint64) {
		if total != 40*bs {
			t.Errorf("progress total %d", total)
		}
		seen = append(seen, done)
	}})
	ok(t, "Flatten", err)
	if res.Copied != 4*bs || res.Parent != "v@1" || res.Size != 40*bs {
		t.Fatalf("Flatten: %+v, want 4 blocks copied", res)
	}
	if len(seen) != 6 || seen[0] != 7*bs || seen[5] != 40*bs {
		t.Fatalf("progress %v", seen)
	}
	if in := s.Info(t, "c"); in.Parent != "" {
		t.Fatalf("parent %q after flatten", in.Parent)
	}
	_, err = c.Flatten(ctx, "v@1", volclient.FlattenOptions{})
	fails(t, "Flatten of a snapshot", err, errs.ErrInvalid, "snapshot")
	ok(t, "Remove", c.Remove(ctx, "v@1"))
	if got := s.Read(t, "c", 0, 3*bs); !bytes.Equal(got, one) {
		t.Fatal("c's blocks 0-2 after flatten and removal of its parent")
	}

	// Rollback: refused while a session is open, then done.
	ok(t, "Snapshot", c.Snapshot(ctx, "v", "v@2"))
	s.Write(t, "v", 0, testutil.Pattern(bs, 4), false)
	sess := s.Session(t, "v")
	fails(t, "Rollback with a session", c.Rollback(ctx, "v", "v@2"), errs.ErrBusy, `"v"`)
	ok(t, "Close", sess.Close(ctx))
	fails(t, "Rollback to a volume", c.Rollback(ctx, "v", "c"), errs.ErrInvalid, `"c"`)
	ok(t, "Rollback", c.Rollback(ctx, "v", "v@2"))
	if got := s.Read(t, "v", 0, bs); !bytes.Equal(got, testutil.Pattern(bs, 3)) {
		t.Fatal("v's block 0 after rollback to v@2")
	}
}
