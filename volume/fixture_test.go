package volume

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/store/memstore"
)

// Format fixtures: testdata/format-v<N>/ holds the map and data objects of
// a few volumes as the code of format version N wrote them (maps/, data/,
// one file per object) and volumes.txt, what they read. TestFormatFixtures
// opens every fixture with today's code and checks the exact data, then
// writes to the volumes and checks that they are rewritten in today's
// version. Before a format change, write the old version's fixture with
//
//	go test ./volume -run TestFormatFixtures -update-fixture
//
// (it writes testdata/format-v<formatVersion>/ from the code as it is) and
// commit it.

var updateFixture = flag.Bool("update-fixture", false,
	"write testdata/format-v<formatVersion>/ from the current code")

// fixtureScenario builds the fixture's volumes (4 KiB blocks, whole
// blocks filled with one byte) and returns the stores and the oracle.
func fixtureScenario(t *testing.T) (*env, map[string]*mvol) {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	e := v.e
	vols := map[string]*mvol{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, block uint64, c byte) {
		t.Helper()
		p := fill(c, modelBS)
		must(writeVol(ctx, e, v.dataStore(), name, block*modelBS, p))
		vols[name].write(block*modelBS, p)
	}
	// 1 GiB of 4 KiB blocks: a tree of height 3. Blocks 0 and 2 share a
	// leaf, so the leaf is updated in place (both slots hold states).
	must(e.Create(ctx, "fixture-vol", 1<<30))
	vols["fixture-vol"] = &mvol{size: 1 << 30, blocks: map[uint64][]byte{}}
	for i, b := range []uint64{0, 1, 300, 70000, 262143, 2} {
		write("fixture-vol", b, byte('a'+i))
	}
	write("fixture-vol", 1, 'B') // owned data object, rewritten
	must(e.Snapshot(ctx, "fixture-vol", "fixture-snap"))
	s := vols["fixture-vol"].clone()
	s.snap = true
	vols["fixture-snap"] = s
	write("fixture-vol", 0, 'A') // copy on write
	write("fixture-vol", 5, 'F')
	// A larger clone, written, then renamed and written again (a second
	// epoch span).
	must(e.Clone(ctx, "fixture-snap", "fixture-clone", 2<<30))
	c := vols["fixture-snap"].clone()
	c.snap, c.size = false, 2<<30
	vols["fixture-clone"] = c
	write("fixture-clone", 300, 'C')
	write("fixture-clone", 400000, 'D')
	must(e.Close(ctx, "fixture-clone"))
	must(e.Rename(ctx, "fixture-clone", "fixture-renamed"))
	vols["fixture-renamed"] = vols["fixture-clone"]
	delete(vols, "fixture-clone")
	write("fixture-renamed", 70000, 'R')
	for n := range vols {
		must(e.Close(ctx, n))
	}
	must(v.maps.Sync(ctx))
	must(v.data.Sync(ctx))
	return v, vols
}

func writeFixture(t *testing.T, dir string) {
	ctx := context.Background()
	v, vols := fixtureScenario(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for sub, st := range map[string]*memstore.Store{"maps": v.maps, "data": v.data} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		err := st.List(ctx, "", func(name string) error {
			size, err := st.Stat(ctx, name)
			if err != nil {
				return err
			}
			b := make([]byte, size)
			if _, err := st.ReadAt(ctx, name, b, 0); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, sub, name), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "# written by TestFormatFixtures -update-fixture, format version %d, 4 KiB blocks\n", formatVersion)
	sb.WriteString("# volume NAME SIZE rw|snap; block NAME INDEX BYTE (the whole block holds BYTE)\n")
	for _, name := range slices.Sorted(maps.Keys(vols)) {
		m := vols[name]
		kind := "rw"
		if m.snap {
			kind = "snap"
		}
		fmt.Fprintf(&sb, "volume %s %d %s\n", name, m.size, kind)
		for _, b := range slices.Sorted(maps.Keys(m.blocks)) {
			fmt.Fprintf(&sb, "block %s %d %c\n", name, b, m.blocks[b][0])
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "volumes.txt"), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// loadFixture reads a fixture directory into two memory stores and the
// oracle of its volumes.
func loadFixture(t *testing.T, dir string) (*env, map[string]*mvol) {
	ctx := context.Background()
	v := &env{maps: memstore.New(), data: memstore.New(), owner: "host-a", bs: modelBS}
	for sub, st := range map[string]*memstore.Store{"maps": v.maps, "data": v.data} {
		files, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(dir, sub, f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.WriteAt(ctx, f.Name(), b, 0, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	vols := map[string]*mvol{}
	f, err := os.Open(filepath.Join(dir, "volumes.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		w := strings.Fields(sc.Text())
		bad := func() { t.Fatalf("%s/volumes.txt:%d: bad line %q", dir, n, sc.Text()) }
		switch {
		case len(w) == 0 || strings.HasPrefix(w[0], "#"):
		case w[0] == "volume" && len(w) == 4:
			size, err := strconv.ParseUint(w[2], 10, 64)
			if err != nil {
				bad()
			}
			vols[w[1]] = &mvol{size: size, snap: w[3] == "snap", blocks: map[uint64][]byte{}}
		case w[0] == "block" && len(w) == 4 && vols[w[1]] != nil && len(w[3]) == 1:
			b, err := strconv.ParseUint(w[2], 10, 64)
			if err != nil {
				bad()
			}
			vols[w[1]].write(b*modelBS, fill(w[3][0], modelBS))
		default:
			bad()
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	v.restart(t)
	return v, vols
}

// TestFormatFixtures opens volumes written by every earlier format version
// and reads exactly their data; written to, they stay readable after a
// restart and their map objects are rewritten in today's version.
func TestFormatFixtures(t *testing.T) {
	if *updateFixture {
		writeFixture(t, fmt.Sprintf("testdata/format-v%d", formatVersion))
	}
	dirs, err := filepath.Glob("testdata/format-v*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no format fixtures in testdata: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ctx := context.Background()
			v, vols := loadFixture(t, dir)
			if len(vols) == 0 {
				t.Fatal("fixture without volumes")
			}
			checkWorld(t, v, vols, vols, nil, dir, false)
			// Read under the lock, an object is rewritten in today's
			// version at once (a snapshot's are never updated).
			if err := v.e.Open(ctx, "fixture-snap"); err != nil {
				t.Fatal(err)
			}
			checkWorld(t, v, vols, vols, nil, dir+", opened", false)
			if err := v.e.Close(ctx, "fixture-snap"); err != nil {
				t.Fatal(err)
			}
			checkHeaderVersion(t, v, "fixture-snap")
			// Write to every writable volume, then read after a restart.
			for _, name := range slices.Sorted(maps.Keys(vols)) {
				m := vols[name]
				if m.snap {
					continue
				}
				for _, b := range []uint64{0, 3, 70001} {
					p := fill('W', 100)
					if err := writeVol(ctx, v.e, v.dataStore(), name, b*modelBS+10, p); err != nil {
						t.Fatalf("write %s block %d: %v", name, b, err)
					}
					m.write(b*modelBS+10, p)
				}
			}
			v.crash(t)
			checkWorld(t, v, vols, vols, nil, dir+", written", false)
			// The headers written are in today's version, in both slots.
			for name, m := range vols {
				if !m.snap {
					checkHeaderVersion(t, v, name)
				}
			}
		})
	}
}

// checkHeaderVersion checks that both slots of volume name's header are of
// today's version and hold its state.
func checkHeaderVersion(t *testing.T, v *env, name string) {
	t.Helper()
	b := make([]byte, 2*kindHeader.slot)
	if _, err := v.maps.ReadAt(context.Background(), name, b, 0); err != nil {
		t.Fatal(err)
	}
	o, err := decodeObject(kindHeader, b)
	for i := range 2 {
		if ver := binary.BigEndian.Uint16(b[i*kindHeader.slot+4:]); ver != formatVersion {
			t.Errorf("%s: header slot %d of version %d", name, i, ver)
		}
	}
	if err != nil || o.stale != 0 || o.fix != 0 {
		t.Errorf("%s: header %+v %v", name, o, err)
	}
}
