package filestore_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/archipelago-go/archipelago/store/filestore"
)

// BenchmarkReadAt measures a 4 KiB ReadAt of a cached object at depth 1,
// the hot path of the file blocker: what the cache lookup, the check that
// the cached file still is the object, and the pread cost together. With
// fdcache=0 every read opens and closes the file. The directory is on
// tmpfs (/dev/shm) when there is one, so that the disk does not hide the
// store's own cost. Run with
//
//	go test -run XXX -bench ReadAt -benchmem ./store/filestore/
func BenchmarkReadAt(b *testing.B) {
	for _, fdc := range []int{filestore.DefaultFDCache, filestore.NoFDCache} {
		b.Run(fmt.Sprintf("fdcache=%d", max(fdc, 0)), func(b *testing.B) {
			dir, err := os.MkdirTemp("/dev/shm", "filestore-bench-")
			if err != nil {
				dir = b.TempDir()
			} else {
				b.Cleanup(func() { os.RemoveAll(dir) })
			}
			s, err := filestore.Open(filestore.Options{Dir: dir, FDCache: fdc})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := b.Context()
			const size = 4 << 20
			if err := s.WriteAt(ctx, "obj", make([]byte, size), 0, false); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 4096)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := s.ReadAt(ctx, "obj", p, int64(i*len(p))%size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
