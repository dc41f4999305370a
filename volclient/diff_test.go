package volclient_test

import (
	"slices"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// TestDiff: Diff through vlmcd and mapperd, in parts of one extent
// (every part a DIFF round trip) and of the mapper's bound: the same
// extents, adjacent ones merged across parts.
func TestDiff(t *testing.T) {
	const bs = 64 << 10
	s := stacktest.Start(t, stacktest.Options{BlockSize: bs})
	c, ctx := client(t, s), t.Context()
	ok(t, "Create", c.Create(ctx, "v", 64*bs))
	s.Write(t, "v", 0, testutil.Pattern(4*bs, 1), false)
	s.Write(t, "v", 10*bs, testutil.Pattern(bs, 2), false)
	ok(t, "Snapshot", c.Snapshot(ctx, "v", "v@1"))
	s.Write(t, "v", 2*bs+7, testutil.Pattern(3, 3), false) // block 2
	s.Write(t, "v", 3*bs, testutil.Pattern(bs, 4), false)  // block 3: adjacent, one extent
	s.Write(t, "v", 20*bs, testutil.Pattern(2*bs, 5), false)
	sess := s.Session(t, "v")
	ok(t, "Trim", sess.Trim(ctx, 10*bs, bs))   // data before: zero
	ok(t, "Trim", sess.Trim(ctx, 40*bs, 8*bs)) // zero before: no change
	ok(t, "Close", sess.Close(ctx))
	ok(t, "Snapshot", c.Snapshot(ctx, "v", "v@2"))

	want := []volclient.DiffExtent{{Offset: 2 * bs, Size: 2 * bs}, {Offset: 10 * bs, Size: bs, Zero: true}, {Offset: 20 * bs, Size: 2 * bs}}
	for _, max := range []int{1, 0} {
		restore := volclient.SetDiffPartMax(max)
		for _, name := range []string{"v", "v@2"} {
			got, err := c.Diff(ctx, name, "v@1")
			ok(t, "Diff", err)
			if !slices.Equal(got, want) {
				t.Errorf("Diff %s from v@1 (parts of %d): %+v, want %+v", name, max, got, want)
			}
		}
		rep, err := c.DiffReport(ctx, "v@1", "")
		ok(t, "DiffReport from nothing", err)
		if w := []volclient.DiffExtent{{Offset: 0, Size: 4 * bs}, {Offset: 10 * bs, Size: bs}}; !slices.Equal(rep.Extents, w) ||
			rep.DataBytes != 5*bs || rep.ZeroBytes != 0 || rep.Size != 64*bs || rep.FromSize != 0 {
			t.Errorf("DiffReport v@1 from nothing (parts of %d): %+v", max, rep)
		}
		restore()
	}
	fails(t, "Diff from a volume", func() error { _, err := c.Diff(ctx, "v@2", "v"); return err }(), errs.ErrInvalid, `"v"`)
	fails(t, "Diff from a missing snapshot", func() error { _, err := c.Diff(ctx, "v", "nope"); return err }(), errs.ErrNotFound, "nope")
	fails(t, "Diff of a missing volume", func() error { _, err := c.Diff(ctx, "gone", "v@1"); return err }(), errs.ErrNotFound, "gone")
}
