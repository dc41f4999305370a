//go:build ceph

package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/archipelago-go/archipelago/internal/e2etest"
	"github.com/archipelago-go/archipelago/volclient"
)

// Import on one host of a RADOS pool, export on the other: the same
// bytes, only the data blocks stored, the exported file sparse; a
// snapshot taken on the second host exports what it was after the first
// host imports another image over the volume.
func TestImportExportRADOS(t *testing.T) {
	a, b := e2etest.TwoHosts(t, radosOptions(t, "impexp"))
	a.Start()
	b.Start()
	dir := t.TempDir()
	const mib = 1 << 20
	size := int64(12*mib + 100)
	pieces := []piece{{4096, 8192}, {9 * mib, 2 * mib}}
	img := filepath.Join(dir, "image.raw")
	want := sparseImage(t, img, size, 5, pieces, []piece{{4 * mib, 4 * mib}})
	volSize := int((size + 511) / 512 * 512)
	a.Must("vlmc", "import", img, "rdisk")
	blocks := []volclient.Extent{{Offset: 0, Size: 4 * mib}, {Offset: 8 * mib, Size: 4 * mib}}
	if got := allocated(t, b, "rdisk"); fmt.Sprint(got) != fmt.Sprint(blocks) {
		t.Errorf("allocated after import: %v, want %v", got, blocks)
	}
	out := filepath.Join(dir, "out.raw")
	b.Must("vlmc", "export", "rdisk", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, "export on the other host", got, want, volSize)
	if used := usedBytes(t, out); used > 2*mib+8192+4*(64<<10) {
		t.Errorf("exported file uses %d bytes on disk: not sparse", used)
	}
	b.Must("vlmc", "snapshot", "rdisk", "rdisk-snap")
	img2 := filepath.Join(dir, "image2.raw")
	want2 := sparseImage(t, img2, size, 6, []piece{{5 * mib, mib}}, nil)
	a.Must("vlmc", "import", "--existing", img2, "rdisk")
	b.Must("vlmc", "export", "--force", "rdisk", out)
	got, _ = os.ReadFile(out)
	sameImage(t, "export after import --existing", got, want2, volSize)
	a.Must("vlmc", "export", "--force", "rdisk-snap", out)
	got, _ = os.ReadFile(out)
	sameImage(t, "export of the snapshot", got, want, volSize)
}
