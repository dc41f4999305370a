package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/internal/testutil"
	"github.com/archipelago-go/archipelago/store/faultstore"
	"github.com/archipelago-go/archipelago/store/memstore"
)

// Damage to map objects at the storage seam: one damaged byte anywhere in
// a header, a map page (of any level) or an epoch record never changes
// what a volume reads or where it allocates; damage beyond the redundancy
// (both copies, a truncated or deleted object) is an error that names the
// object, to the caller and in the log, never an older state.

// damageWorld: volume damage-vol (1 GiB of 4 KiB blocks: a tree of
// height 3) with data in blocks spread over it, flushed and closed.
type damageWorld struct {
	maps, data *memstore.Store
	vol        *mvol
	objects    map[string]string // kind -> object name
}

const damageVol = "damage-vol"

var damageBlocks = []uint64{0, 2, 300, 70000, 262143}

func newDamageWorld(t *testing.T) *damageWorld {
	ctx := context.Background()
	v := newEnv(t, modelBS)
	v.log = slog.New(slog.DiscardHandler)
	v.restart(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.e.Create(ctx, damageVol, 1<<30))
	m := &mvol{size: 1 << 30, blocks: map[uint64][]byte{}}
	for i, b := range damageBlocks {
		p := fill(byte('a'+i), modelBS)
		must(writeVol(ctx, v.e, v.dataStore(), damageVol, b*modelBS, p))
		m.write(b*modelBS, p)
	}
	must(v.e.Close(ctx, damageVol))
	must(v.maps.Sync(ctx))
	must(v.data.Sync(ctx))
	w := &damageWorld{maps: v.maps, data: v.data, vol: m, objects: map[string]string{
		"header": damageVol, "epoch record": epochName(damageVol),
	}}
	must(v.maps.List(ctx, damageVol+"_", func(n string) error {
		if isPageForm(n) {
			// <prefix>_<epoch>_m<level>_<index>: one page per level.
			level := n[len(damageVol)+1+16+2 : len(damageVol)+1+16+3]
			w.objects["page at level "+level] = n
		}
		return nil
	}))
	for _, k := range []string{"page at level 0", "page at level 1", "page at level 2"} {
		if w.objects[k] == "" {
			t.Fatalf("no %s: %v", k, w.objects)
		}
	}
	return w
}

func kindOf(desc string) kind {
	switch {
	case desc == "header":
		return kindHeader
	case desc == "epoch record":
		return kindEpoch
	}
	return kindPage
}

// engine returns an engine over the world's stores (the stores
// themselves, or copies), its plan and its log.
func (w *damageWorld) engine(t *testing.T, copies bool) (*env, *testutil.Buffer) {
	lb := &testutil.Buffer{}
	v := &env{maps: w.maps, data: w.data, owner: "host-a", bs: modelBS, log: slog.New(slog.NewTextHandler(lb, nil))}
	if copies {
		v.maps, v.data = w.maps.Crash(), w.data.Crash()
	}
	v.restart(t)
	return v, lb
}

// readAll reads every block the volume has data in, and one that is
// zero: nil if all read exactly, else the first error; a read that
// succeeds with other data fails the test.
func (w *damageWorld) readAll(t *testing.T, v *env, desc string) error {
	t.Helper()
	ctx := context.Background()
	in, err := v.e.Info(ctx, damageVol)
	if err != nil {
		return err
	}
	if in.Size != w.vol.size {
		t.Fatalf("%s: size %d, want %d", desc, in.Size, w.vol.size)
	}
	for _, b := range append(slices.Clone(damageBlocks), 5000) {
		got, err := readVol(ctx, v.e, v.dataStore(), damageVol, b*modelBS, modelBS)
		if err != nil {
			return err
		}
		if want := w.vol.read(b*modelBS, modelBS); !bytes.Equal(got, want) {
			t.Fatalf("%s: block %d reads %s, want %s", desc, b, runs(got), runs(want))
		}
	}
	return nil
}

// sampled is the offsets of an object the engine sweep damages: in both
// slots, every byte up to the end of the checksum that is not in a zero
// map entry (the slot's head, the payload, the checksum), and every 61st
// byte of the rest (zero entries, zero padding) and the last one; every
// byte of an epoch record. (The decoder sweep damages every byte.)
func sampled(k kind, raw []byte) []int64 {
	var offs []int64
	o, _ := decodeObject(k, raw)
	used := slotHeadLen + len(o.payload) + slotCRCLen
	zeroEntry := func(i int) bool {
		if k != kindPage || i < slotHeadLen+16 || i >= slotHeadLen+pagePayloadLen {
			return false
		}
		e := slotHeadLen + 16 + (i-slotHeadLen-16)/entrySize*entrySize
		return isZero(o.payload[e-slotHeadLen : e-slotHeadLen+entrySize])
	}
	for s := range 2 {
		n := 0
		for i := range k.slot {
			if (i < used && !zeroEntry(i)) || i == k.slot-1 || k == kindEpoch {
				offs = append(offs, int64(s*k.slot+i))
				continue
			}
			if n%61 == 0 {
				offs = append(offs, int64(s*k.slot+i))
			}
			n++
		}
	}
	return offs
}

// rawObject reads object name, and checks that both slots hold its state.
func rawObject(t *testing.T, st *memstore.Store, k kind, name string) []byte {
	b := make([]byte, 2*k.slot)
	if _, err := st.ReadAt(context.Background(), name, b, 0); err != nil {
		t.Fatal(err)
	}
	o, err := decodeObject(k, b)
	if err != nil || o.stale != 0 || o.fix != 0 {
		t.Fatalf("object %s before damage: %+v %v", name, o, err)
	}
	return b
}

func payloadLen(t *testing.T, st *memstore.Store, k kind, name string) int {
	o, _ := decodeObject(k, rawObject(t, st, k, name))
	return len(o.payload)
}

// TestDamageEveryByte damages, one at a time, every byte of the header, of
// a map page of each level and of the epoch record of a volume. The
// decoder must find the same state in each case (every byte, two ways).
// Then through the engine, for the bytes of sampled, the store returns the
// object with the byte flipped: the volume must read exactly its data, and
// the damage must be logged naming the object. For the epoch record, read
// only to allocate, a write to a new block must allocate the next epoch.
func TestDamageEveryByte(t *testing.T) {
	w := newDamageWorld(t)
	for _, desc := range slices.Sorted(maps.Keys(w.objects)) {
		name := w.objects[desc]
		k := kindOf(desc)
		t.Run(strings.ReplaceAll(desc, " ", "-"), func(t *testing.T) {
			t.Parallel()
			raw := rawObject(t, w.maps, k, name)
			want, _ := decodeObject(k, raw)
			for off := range raw {
				for _, mask := range []byte{0xff, 0x01} {
					b := slices.Clone(raw)
					b[off] ^= mask
					o, err := decodeObject(k, b)
					if err != nil || o.seq != want.seq || !bytes.Equal(o.payload, want.payload) ||
						o.fix != 1<<(off/k.slot) || o.damage[off/k.slot] == "" {
						t.Fatalf("%s %s: byte %d ^ %#x: decoded %+v, %v", desc, name, off, mask, o, err)
					}
				}
			}
			offs := sampled(k, raw)
			for _, off := range offs {
				d := fmt.Sprintf("%s %s: byte %d flipped", desc, name, off)
				v, lb := w.engine(t, k == kindEpoch)
				v.plan.Inject(faultstore.Rule{Ops: faultstore.OpRead, Object: faultstore.Named(name), Flip: true, FlipAt: off})
				if k == kindEpoch {
					w.writeNewBlock(t, v, d)
				}
				if err := w.readAll(t, v, d); err != nil {
					t.Fatalf("%s: %v", d, err)
				}
				if log := lb.String(); !strings.Contains(log, "object="+name+" ") {
					t.Fatalf("%s: not logged: %q", d, log)
				}
			}
			t.Logf("%d bytes of %d flipped through the engine", len(offs), 2*k.slot)
		})
	}
}

// writeNewBlock writes block 4000 (a new session: the epoch record is
// read and bumped) and checks that the allocation epoch is the next one.
func (w *damageWorld) writeNewBlock(t *testing.T, v *env, desc string) {
	t.Helper()
	ctx := context.Background()
	before, err := v.e.Info(ctx, damageVol)
	if err != nil {
		t.Fatalf("%s: %v", desc, err)
	}
	rec, err := v.e.readObject(ctx, kindEpoch, epochName(damageVol))
	if err != nil {
		t.Fatalf("%s: %v", desc, err)
	}
	next, _ := decodeEpoch(rec.payload)
	next++
	p := fill('N', modelBS)
	if err := writeVol(ctx, v.e, v.dataStore(), damageVol, 4000*modelBS, p); err != nil {
		t.Fatalf("%s: write: %v", desc, err)
	}
	after, err := v.e.Info(ctx, damageVol)
	if err != nil || after.Epoch != next || next <= before.Epoch {
		t.Fatalf("%s: allocation epoch %d before, %d after (%v), want %d", desc, before.Epoch, after.Epoch, err, next)
	}
	got, err := readVol(ctx, v.e, v.dataStore(), damageVol, 4000*modelBS, modelBS)
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("%s: new block reads %s (%v)", desc, runs(got), err)
	}
}

// TestDamageBeyondRedundancy: both copies of an object damaged, the
// object truncated or deleted: reads (and, for the epoch record,
// allocations) fail with an error naming the object, which is logged, or
// read exactly the data when a whole copy is left.
func TestDamageBeyondRedundancy(t *testing.T) {
	w := newDamageWorld(t)
	for _, desc := range slices.Sorted(maps.Keys(w.objects)) {
		name := w.objects[desc]
		k := kindOf(desc)
		pl := payloadLen(t, w.maps, k, name)
		type damage struct {
			what  string
			rules []faultstore.Rule
			whole bool // a whole copy is left: the data reads exactly
		}
		on := faultstore.Named(name)
		flip := func(off int) faultstore.Rule {
			return faultstore.Rule{Ops: faultstore.OpRead, Object: on, Flip: true, FlipAt: int64(off)}
		}
		cases := []damage{
			{what: "both copies", rules: []faultstore.Rule{flip(10), flip(k.slot + slotHeadLen + pl/2)}},
			{what: "both copies' checksums", rules: []faultstore.Rule{flip(slotHeadLen + pl), flip(k.slot + slotHeadLen + pl + 3)}},
			{what: "deleted", rules: []faultstore.Rule{{Object: on, Missing: true}}},
		}
		for _, size := range []int{0, 1, 6, slotHeadLen + pl, k.slot - 1, k.slot, k.slot + 1, 2*k.slot - 1} {
			cases = append(cases, damage{what: fmt.Sprintf("truncated to %d bytes", size),
				rules: []faultstore.Rule{{Object: on, Truncated: true, Size: int64(size)}},
				whole: size >= slotHeadLen+pl+slotCRCLen}) // slot 0 whole
		}
		for _, c := range cases {
			d := fmt.Sprintf("%s %s %s", desc, name, c.what)
			v, lb := w.engine(t, true)
			for _, r := range c.rules {
				v.plan.Inject(r)
			}
			var err error
			if k == kindEpoch {
				err = writeVol(context.Background(), v.e, v.dataStore(), damageVol, 4000*modelBS, fill('N', 10))
				if err == nil {
					w.vol.write(4000*modelBS, fill('N', 10))
					err = w.readAll(t, v, d)
					delete(w.vol.blocks, 4000)
				}
			} else {
				err = w.readAll(t, v, d)
			}
			switch {
			case c.whole && err != nil:
				t.Errorf("%s: %v, want the data", d, err)
			case c.whole:
			case desc == "header" && (c.what == "deleted" || c.what == "truncated to 0 bytes"):
				// As if the volume had been removed: Remove deletes the
				// header first.
				if !errors.Is(err, errs.ErrNotFound) || !strings.Contains(err.Error(), name) {
					t.Errorf("%s: %v, want ErrNotFound naming the volume", d, err)
				}
			case !errors.Is(err, errs.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)):
				t.Errorf("%s: %v, want ErrCorrupt naming the object", d, err)
			case !strings.Contains(lb.String(), "level=ERROR msg=\"map object unreadable\" object="+name+" "):
				t.Errorf("%s: not logged: %q", d, lb.String())
			}
		}
	}
}

// TestDamagedHeaderAtRest is the case of issue 9 (A.4): one byte of a
// copy of the header of a volume with flushed data is damaged on storage
// (each copy in turn; and so for a leaf page). The volume reads its data,
// the damage is logged naming the object, and the engine rewrites the
// damaged copy when it reads the object under the volume's lock; a reader
// without the lock leaves it (and logs it once).
func TestDamagedHeaderAtRest(t *testing.T) {
	ctx := context.Background()
	w := newDamageWorld(t)
	for _, desc := range []string{"header", "page at level 0"} {
		name, k := w.objects[desc], kindOf(desc)
		for slot := range 2 {
			d := fmt.Sprintf("%s %s, slot %d damaged", desc, name, slot)
			v, lb := w.engine(t, true)
			off := int64(slot*k.slot + slotHeadLen + 30) // the header's size; a page's first entry
			if err := faultstore.FlipByte(ctx, v.maps, name, off, 0); err != nil {
				t.Fatal(err)
			}
			raw := func() object {
				b := make([]byte, 2*k.slot)
				if _, err := v.maps.ReadAt(ctx, name, b, 0); err != nil {
					t.Fatal(err)
				}
				o, err := decodeObject(k, b)
				if err != nil {
					t.Fatal(err)
				}
				return o
			}
			// Another host holds the lock: read without it, twice.
			if err := v.maps.TryLock(ctx, lockName(damageVol), "host-z"); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := w.readAll(t, v, d+", without the lock"); err != nil {
					t.Fatalf("%s, without the lock: %v", d, err)
				}
			}
			if o := raw(); o.stale != 1<<slot {
				t.Fatalf("%s: a reader without the lock rewrote it: %+v", d, o)
			}
			if n := strings.Count(lb.String(), "object="+name+" "); n != 1 {
				t.Fatalf("%s: logged %d times without the lock: %q", d, n, lb.String())
			}
			if err := v.maps.Unlock(ctx, lockName(damageVol), "host-z", false); err != nil {
				t.Fatal(err)
			}
			// Under the lock: repaired.
			if err := v.e.Open(ctx, damageVol); err != nil {
				t.Fatalf("%s: open: %v", d, err)
			}
			if err := w.readAll(t, v, d+", with the lock"); err != nil {
				t.Fatalf("%s, with the lock: %v", d, err)
			}
			if o := raw(); o.stale != 0 || o.fix != 0 {
				t.Fatalf("%s: not repaired under the lock: %+v", d, o)
			}
			if !strings.Contains(lb.String(), `msg="map object repaired" object=`+name+" ") {
				t.Fatalf("%s: repair not logged: %q", d, lb.String())
			}
			v.crash(t)
			if err := w.readAll(t, v, d+", restarted"); err != nil {
				t.Fatalf("%s, repaired and restarted: %v", d, err)
			}
		}
	}
}

// TestStorageErrorsAtTheSeam: a map write that fails with EIO, ENOSPC or
// EROFS (at each write of a first write to a new block in turn) fails the
// write with an error that says so and names the object; the volume then
// reads as before, the write done again works and survives a crash. A map
// read slower than the caller's deadline ends with the deadline.
func TestStorageErrorsAtTheSeam(t *testing.T) {
	ctx := context.Background()
	w := newDamageWorld(t)
	p := fill('S', modelBS)
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC, syscall.EROFS} {
		for skip := 0; ; skip++ {
			d := fmt.Sprintf("%v at map write %d", errno, skip)
			v, _ := w.engine(t, true)
			if err := v.e.Open(ctx, damageVol); err != nil {
				t.Fatal(err)
			}
			f := v.plan.Inject(faultstore.Rule{Ops: faultstore.OpWrite, Store: v.maps, Skip: skip, Times: 1, Errno: errno})
			err := writeVol(ctx, v.e, v.dataStore(), damageVol, 4000*modelBS, p)
			if f.Hits() == 0 { // the write made fewer map writes
				if err != nil {
					t.Fatalf("%s: %v", d, err)
				}
				if skip == 0 {
					t.Fatal("a first write made no map write")
				}
				t.Logf("%v: failed each of %d map writes in turn", errno, skip)
				break
			}
			if !errors.Is(err, errno) || !strings.Contains(err.Error(), `"`+damageVol) {
				t.Fatalf("%s: %v, want %v naming the object", d, err, errno)
			}
			v.plan.Clear()
			if err := w.readAll(t, v, d); err != nil {
				t.Fatalf("%s: read after: %v", d, err)
			}
			if got, err := readVol(ctx, v.e, v.dataStore(), damageVol, 4000*modelBS, modelBS); err != nil || !isZero(got) {
				t.Fatalf("%s: the failed block reads %s (%v)", d, runs(got), err)
			}
			if err := writeVol(ctx, v.e, v.dataStore(), damageVol, 4000*modelBS, p); err != nil {
				t.Fatalf("%s: write again: %v", d, err)
			}
			v.crash(t)
			if got, err := readVol(ctx, v.e, v.dataStore(), damageVol, 4000*modelBS, modelBS); err != nil || !bytes.Equal(got, p) {
				t.Fatalf("%s: written again, after a crash: %s (%v)", d, runs(got), err)
			}
		}
	}
	v, _ := w.engine(t, true)
	v.plan.Inject(faultstore.Rule{Ops: faultstore.OpRead, Store: v.maps, Delay: time.Hour})
	dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := v.e.MapRead(dctx, damageVol, 0, modelBS); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow map read: %v, want the deadline", err)
	}
	v.plan.Clear()
	if err := w.readAll(t, v, "after a slow read"); err != nil {
		t.Fatal(err)
	}
}
