package composer_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/archipelago-go/archipelago/internal/stacktest"
)

// TestModelThroughPeers drives random writes, reads, snapshots, clones,
// removes, renames and resizes through real peer processes and checks
// every read against a plain byte slice per volume; at the end it kills
// every peer, starts them again and checks every volume whole.
// ARCHIPELAGO_MODEL_SEED replays a run; ARCHIPELAGO_MODEL_STEPS sets its
// length.
func TestModelThroughPeers(t *testing.T) {
	steps := 600
	if testing.Short() {
		steps = 150
	}
	if v, err := strconv.Atoi(os.Getenv("ARCHIPELAGO_MODEL_STEPS")); err == nil {
		steps = v
	}
	seed := rand.Uint64()
	if v, err := strconv.ParseUint(os.Getenv("ARCHIPELAGO_MODEL_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d, %d steps (ARCHIPELAGO_MODEL_SEED to replay)", seed, steps)
	rng := rand.New(rand.NewPCG(seed, 1))
	s := stacktest.Start(t, stacktest.Options{BlockSize: 64 << 10})

	type vol struct {
		data []byte
		snap bool
	}
	vols := map[string]*vol{}
	names := func(snap bool) []string {
		var out []string
		for n, v := range vols {
			if v.snap == snap {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out
	}
	pick := func(list []string) string { return list[rng.IntN(len(list))] }
	next := 0
	fresh := func(prefix string) string { next++; return fmt.Sprintf("%s%04d", prefix, next) }
	must := func(step int, what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("step %d: %s: %v", step, what, err)
		}
	}
	check := func(step int, name string, off, n int) {
		t.Helper()
		got, err := s.TryRead(name, uint64(off), n)
		must(step, "read "+name, err)
		if want := vols[name].data[off : off+n]; !bytes.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Fatalf("step %d: %s [%d,+%d): byte %d is %#x, want %#x", step, name, off, n, off+i, got[i], want[i])
		}
	}

	for step := 0; step < steps; step++ {
		rw, ro := names(false), names(true)
		switch k := rng.IntN(100); {
		case len(rw) == 0 || k < 5:
			name := fresh("vol")
			size := (1 + rng.IntN(8)) << 20
			must(step, "create "+name, s.TryCreate(name, uint64(size)))
			vols[name] = &vol{data: make([]byte, size)}
		case k < 45:
			name := pick(rw)
			v := vols[name]
			n := 1 + rng.IntN(200<<10)
			off := rng.IntN(len(v.data) - n + 1)
			if rng.IntN(4) == 0 { // sector-aligned, like a VM
				off &^= 511
			}
			buf := make([]byte, n)
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			fua := rng.IntN(8) == 0
			must(step, "write "+name, s.TryWrite(name, uint64(off), buf, fua))
			copy(v.data[off:], buf)
		case k < 75:
			all := append(rw, ro...)
			name := pick(all)
			v := vols[name]
			n := 1 + rng.IntN(300<<10)
			n = min(n, len(v.data))
			check(step, name, rng.IntN(len(v.data)-n+1), n)
		case k < 83:
			name := pick(rw)
			snap := fresh("snap")
			must(step, "snapshot "+name, s.TrySnapshot(name, snap))
			vols[snap] = &vol{data: slices.Clone(vols[name].data), snap: true}
		case k < 90 && len(ro) > 0:
			parent := pick(ro)
			name := fresh("clone")
			size := len(vols[parent].data)
			if rng.IntN(2) == 0 {
				size += rng.IntN(4) << 20
			}
			must(step, "clone "+parent, s.TryClone(parent, name, uint64(size)))
			data := make([]byte, size)
			copy(data, vols[parent].data)
			vols[name] = &vol{data: data}
		case k < 93:
			name := pick(append(rw, ro...))
			must(step, "remove "+name, s.TryRemove(name))
			delete(vols, name)
		case k < 96:
			name := pick(append(rw, ro...))
			to := fresh("ren")
			must(step, "rename "+name, s.TryRename(name, to))
			vols[to] = vols[name]
			delete(vols, name)
		default:
			name := pick(rw)
			v := vols[name]
			size := len(v.data) + (rng.IntN(5)-1)<<20
			if size < 1<<20 {
				size = 1 << 20
			}
			shrink := size < len(v.data)
			must(step, "resize "+name, s.TryResize(name, uint64(size), shrink))
			if shrink {
				v.data = v.data[:size]
			} else {
				v.data = append(v.data, make([]byte, size-len(v.data))...)
			}
		}
	}
	s.Restart(t)
	for name, v := range vols {
		check(steps, name, 0, len(v.data))
	}
	t.Logf("%d volumes checked whole after a restart of every peer", len(vols))
}
