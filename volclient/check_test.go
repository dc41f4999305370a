package volclient_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/stacktest"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/volclient"
)

// TestCheck: Check through vlmcd and mapperd finds nothing on a clean
// pool and names a page deleted by hand; CheckProgress tells how far the
// check is while it runs (a check that finds something lasts a second
// at least: it looks again before it reports); a name of no volume is
// ErrNotFound.
func TestCheck(t *testing.T) {
	const bs = 64 << 10
	s := stacktest.Start(t, stacktest.Options{BlockSize: bs})
	c, ctx := client(t, s), t.Context()
	for _, v := range []string{"a", "b"} {
		ok(t, "Create", c.Create(ctx, v, 16*bs))
		s.Write(t, v, 0, testutil.Pattern(2*bs, 1), false)
	}
	rep, err := c.Check(ctx, nil)
	ok(t, "Check", err)
	if rep.Volumes != 2 || rep.Pages != 2 || rep.DataObjects != 4 || rep.Found() != 0 || rep.Problems == nil {
		t.Fatalf("Check of a clean pool: %+v", rep)
	}
	// b's only map page goes.
	var page string
	re := regexp.MustCompile(`^b_[0-9a-f]{16}_m0_0{16}$`)
	_ = filepath.WalkDir(s.Opts.MapDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && re.MatchString(d.Name()) {
			page = d.Name()
			ok(t, "remove", os.Remove(p))
		}
		return nil
	})
	if page == "" {
		t.Fatal("no map page of b")
	}
	var seen []volclient.CheckProgress
	rep, err = c.CheckProgress(ctx, nil, func(p volclient.CheckProgress) { seen = append(seen, p) })
	ok(t, "CheckProgress", err)
	want := volclient.CheckProblem{Volume: "b", Object: page, Kind: volclient.ProblemDangling}
	if len(rep.Problems) != 1 || rep.Found() != 1 || rep.Problems[0].Detail == "" {
		t.Fatalf("Check with b's page deleted: %+v, want %+v", rep.Problems, want)
	}
	if got := rep.Problems[0]; got.Volume != want.Volume || got.Object != want.Object || got.Kind != want.Kind {
		t.Fatalf("Check with b's page deleted: %+v, want %+v", got, want)
	}
	if len(seen) == 0 || seen[len(seen)-1] != (volclient.CheckProgress{Done: 2, Total: 2}) {
		t.Fatalf("progress %+v", seen)
	}
	_, err = c.Check(ctx, []string{"a", "nosuch"})
	fails(t, "Check of a volume that does not exist", err, errs.ErrNotFound, `"nosuch"`)
	if err != nil && !strings.HasPrefix(err.Error(), "check: ") {
		t.Errorf("error %q", err)
	}
}
