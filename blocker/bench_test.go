package blocker_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/xseg"
)

// BenchmarkFiled measures READ and WRITE of 4 KiB and 4 MiB at queue depth
// 1 through the segment to a filed process whose archip_dir is on tmpfs
// (/dev/shm), and in the same run pread/pwrite (os.File ReadAt/WriteAt,
// also at depth 1) of the very file that holds the object: the cost of the
// segment and of filed over the bare system calls. Both sides cycle
// through the offsets of one 64 MiB object in the same order, in two
// alternating halves each.
//
// Metrics: seg-MB/s and direct-MB/s, their ratio seg/direct (target at
// 4 MiB: 0.8 or more), and ns/op for the segment side alone. Run with
//
//	go test -run XXX -bench Filed -benchtime 2000x ./blocker/
//
// Set ARCHIPELAGO_FILED_CPUPROFILE=/path/filed.prof to have filed write a
// CPU profile of the run (the client side: go test -cpuprofile).
func BenchmarkFiled(b *testing.B) {
	root, err := os.MkdirTemp("/dev/shm", "archipelago-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	args := []string{"--nr-ops", "16", "--nr-threads", "4", "--log-level", "0"}
	prof := os.Getenv("ARCHIPELAGO_FILED_CPUPROFILE")
	if prof != "" {
		args = append(args, "--cpuprofile", prof)
	}
	f := startFiled(b, root, args...)
	if prof != "" {
		// Before the kill of the cleanup: a graceful stop writes the profile.
		b.Cleanup(func() {
			if err := f.proc.Stop(10 * time.Second); err != nil {
				b.Error(err)
			}
		})
	}

	const (
		name    = "bench-object"
		objSize = 64 * mib
	)
	for off := 0; off < objSize; off += 4 * mib {
		f.write(name, uint64(off), random(uint64(off), 4*mib))
	}
	f.ok(req{op: xseg.OpSync})
	paths := findFiles(b, f.dir, name)
	if len(paths) != 1 {
		b.Fatalf("files of %s under %s: %q", name, f.dir, paths)
	}
	file, err := os.OpenFile(paths[0], os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()

	for _, size := range []int{4 * kib, 4 * mib} {
		for _, op := range []xseg.Op{xseg.OpRead, xseg.OpWrite} {
			label := fmt.Sprintf("%dKiB/%v", size/kib, op)
			if size >= mib {
				label = fmt.Sprintf("%dMiB/%v", size/mib, op)
			}
			b.Run(label, func(b *testing.B) {
				buf := random(7, size)
				offset := func(i int) int64 { return int64(i*size) % objSize }
				seg := func(from, to int) {
					for i := from; i < to; i++ {
						segIO(b, f, op, name, offset(i), size)
					}
				}
				direct := func(from, to int) {
					for i := from; i < to; i++ {
						var err error
						if op == xseg.OpRead {
							_, err = file.ReadAt(buf, offset(i))
						} else {
							_, err = file.WriteAt(buf, offset(i))
						}
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				// Warm up both paths (page tables, file cache, heap).
				seg(0, 4)
				direct(0, 4)
				var segT, directT time.Duration
				half := b.N / 2
				for _, r := range [][2]int{{0, half}, {half, b.N}} {
					t0 := time.Now()
					seg(r[0], r[1])
					t1 := time.Now()
					direct(r[0], r[1])
					segT += t1.Sub(t0)
					directT += time.Since(t1)
				}
				mbps := func(d time.Duration) float64 { return float64(b.N) * float64(size) / 1e6 / d.Seconds() }
				segMBps, directMBps := mbps(segT), mbps(directT)
				b.ReportMetric(float64(segT.Nanoseconds())/float64(b.N), "ns/op")
				b.ReportMetric(segMBps, "seg-MB/s")
				b.ReportMetric(directMBps, "direct-MB/s")
				b.ReportMetric(segMBps/directMBps, "seg/direct")
				if b.N >= 10 {
					b.Logf("%s x%d: segment %.0f MB/s (%v/op), direct %.0f MB/s (%v/op): ratio %.2f",
						label, b.N, segMBps, segT/time.Duration(b.N), directMBps, directT/time.Duration(b.N), segMBps/directMBps)
				}
			})
		}
	}
}

// segIO makes one READ or WRITE of size bytes at off through the segment,
// the way a client does: allocate, submit, wait, release.
func segIO(b *testing.B, f *filed, op xseg.Op, name string, off int64, size int) {
	r, err := f.c.Alloc(size)
	if err != nil {
		b.Fatal(err)
	}
	r.SetOp(op)
	r.SetTarget(name)
	r.SetOffset(uint64(off))
	r.SetSize(uint64(size))
	rep, err := f.c.Call(context.Background(), r, filedPort)
	if err != nil {
		b.Fatal(err)
	}
	err, serviced := rep.Err(), rep.Serviced()
	f.c.Put(rep)
	if err != nil || serviced != uint64(size) {
		b.Fatalf("%v of %d bytes at %d: serviced %d, %v", op, size, off, serviced, err)
	}
}
