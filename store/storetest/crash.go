package storetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/store"
)

// CrashableStore is a store that can simulate a power cut. Crash returns a
// new store, of the same kind, that holds what survived the cut; its content
// counts as durable. After Crash the suite uses only the returned store (and
// still closes the old one).
type CrashableStore[S any] interface {
	store.Store
	Crash() S
}

// RunCrash checks durability: after a crash, every FUA write and everything
// before a successful Sync survives, and data never appears that was not
// written. If the store is a store.Locker, held locks must survive too.
func RunCrash[S CrashableStore[S]](t *testing.T, open func(t *testing.T) S) {
	t.Run("FUA", func(t *testing.T) { testCrashFUA(t, openStore(t, open)) })
	t.Run("Synced", func(t *testing.T) { testCrashSynced(t, openStore(t, open)) })
	t.Run("Unsynced", func(t *testing.T) { testCrashUnsynced(t, openStore(t, open)) })
	t.Run("Locks", func(t *testing.T) { testCrashLocks(t, openStore(t, open)) })
	t.Run("Restart", func(t *testing.T) { testCrashRestart(t, openStore(t, open)) })
	t.Run("Random", func(t *testing.T) {
		for seed := range uint64(40) {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				testCrashRandom(t, openStore(t, open), seed)
			})
		}
	})
}

// Restartable is a CrashableStore that can also simulate the restart of
// its process without a power cut: Restart returns a new store of the same
// storage that sees everything written so far, durable or not (it still
// sits in the operating system's caches); the old one is closed.
type Restartable[S any] interface {
	Restart() S
}

// testCrashRestart: a store opened after a process restart finds objects
// whose existence is not durable yet (the old process wrote them without
// a Sync); its FUA writes and Syncs must make them durable all the same,
// existence included.
func testCrashRestart[S CrashableStore[S]](t *testing.T, s S) {
	r, ok := any(s).(Restartable[S])
	if !ok {
		t.Skipf("%T cannot restart without a crash", s)
	}
	ctx := t.Context()
	write(t, s, "fua", []byte("old data"), 0, false)
	write(t, s, "synced", []byte("old data"), 0, false)
	s = openStore(t, func(*testing.T) S { return r.Restart() })
	write(t, s, "fua", []byte("NEW"), 4, true)
	write(t, s, "synced", []byte("NEW"), 4, false)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c := crash(t, s)
	for _, name := range []string{"fua", "synced"} {
		got := read(t, c, name, 0, 16)
		if len(got) < 7 || string(got[4:7]) != "NEW" {
			t.Errorf("object %q after a restart, a write (FUA or synced) and a crash: %q", name, got)
		}
	}
}

// crash crashes s and closes the new store when t ends.
func crash[S CrashableStore[S]](t *testing.T, s S) S {
	t.Helper()
	return openStore(t, func(*testing.T) S { return s.Crash() })
}

func testCrashFUA[S CrashableStore[S]](t *testing.T, s S) {
	write(t, s, "a", []byte("alpha"), 0, true)
	write(t, s, "b", []byte("beta"), 5000, true)
	write(t, s, "c", pattern(1, 10000), 0, false)
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	write(t, s, "c", []byte("gamma"), 100, true)
	write(t, s, "empty", nil, 0, true)
	c := crash(t, s)
	wantContent(t, c, "a", []byte("alpha"))
	wantContent(t, c, "b", append(make([]byte, 5000), "beta"...))
	wantContent(t, c, "c", slices.Concat(pattern(1, 100), []byte("gamma"), pattern(1, 10000)[105:]))
	wantContent(t, c, "empty", nil)
}

func testCrashSynced[S CrashableStore[S]](t *testing.T, s S) {
	ctx := t.Context()
	for _, name := range []string{"x", "y", "z", "w"} {
		write(t, s, name, []byte(name+" old"), 0, false)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	write(t, s, "x", []byte("new"), 2, false)
	write(t, s, "v", []byte("created"), 3, false)
	if err := s.Copy(ctx, "x", "w"); err != nil {
		t.Fatal(err)
	}
	if err := s.Copy(ctx, "y", "u"); err != nil {
		t.Fatal(err)
	}
	if err := s.Truncate(ctx, "y", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "z"); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c := crash(t, s)
	wantContent(t, c, "x", []byte("x new"))
	wantContent(t, c, "w", []byte("x new"))
	wantContent(t, c, "y", []byte("y "))
	wantContent(t, c, "u", []byte("y old"))
	wantContent(t, c, "v", []byte("\x00\x00\x00created"))
	wantMissing(t, c, "z")
	if got := list(t, c, ""); !slices.Equal(got, []string{"u", "v", "w", "x", "y"}) {
		t.Errorf("List after crash = %q", got)
	}
}

// testCrashUnsynced checks that changes after the last Sync leave the
// objects in a state built from what was written.
func testCrashUnsynced[S CrashableStore[S]](t *testing.T, s S) {
	ctx := t.Context()
	old := bytes8('o', 4096)
	write(t, s, "kept", old, 0, false)
	write(t, s, "gone", old, 0, false)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	write(t, s, "kept", bytes8('n', 1024), 1024, false)
	write(t, s, "fresh", bytes8('f', 100), 0, false)
	if err := s.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	c := crash(t, s)
	got := readAll(t, c, "kept")
	if len(got) != 4096 {
		t.Fatalf("kept: size %d after crash, want 4096", len(got))
	}
	for i, b := range got {
		if b != 'o' && (b != 'n' || i < 1024 || i >= 2048) {
			t.Fatalf("kept: byte %d is %q after crash; neither old nor written there", i, b)
		}
	}
	if _, err := c.Stat(ctx, "fresh"); err == nil {
		for i, b := range readAll(t, c, "fresh") {
			if b != 'f' && b != 0 {
				t.Fatalf("fresh: byte %d is %q after crash", i, b)
			}
		}
	} else if !errors.Is(err, errs.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "gone"); err == nil {
		for i, b := range readAll(t, c, "gone") {
			if b != 'o' && b != 0 {
				t.Fatalf("gone: byte %d is %q after crash", i, b)
			}
		}
	} else if !errors.Is(err, errs.ErrNotFound) {
		t.Fatal(err)
	}
}

func bytes8(b byte, n int) []byte { return []byte(strings.Repeat(string(b), n)) }

func testCrashLocks[S CrashableStore[S]](t *testing.T, s S) {
	l, ok := store.Store(s).(store.Locker)
	if !ok {
		t.Skipf("%T does not implement store.Locker", s)
	}
	ctx := t.Context()
	lock(t, l, "held", "host-a")
	lock(t, l, "released", "host-b")
	lock(t, l, "broken", "host-b")
	if err := l.Unlock(ctx, "released", "host-b", false); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx, "broken", "host-c", true); err != nil {
		t.Fatal(err)
	}
	c := crash(t, s)
	cl := store.Store(c).(store.Locker)
	wantOwner(t, cl, "held", "host-a")
	wantOwner(t, cl, "released", "")
	wantOwner(t, cl, "broken", "")
	wantLocked(t, cl.TryLock(ctx, "held", "host-b"), "held", "host-a")
	if got := list(t, c, ""); len(got) != 0 {
		t.Errorf("List after crash = %q, want no objects", got)
	}
}

// The random crash test works in 8-byte words: every write fills its words
// with its own id, so a word read after a crash tells which write it came
// from.
const wordSize = 8

// wordModel is what a word may hold after a crash: must, unless a later
// change put one of alts there (or may have: an unsynced delete or truncate
// adds 0).
type wordModel struct {
	must uint64
	alts []uint64
}

func (w *wordModel) allows(v uint64) bool { return v == w.must || slices.Contains(w.alts, v) }

func (w *wordModel) add(v uint64) {
	if !w.allows(v) {
		w.alts = append(w.alts, v)
	}
}

// objModel tracks one object: its current content and what a crash may
// leave of it.
type objModel struct {
	cur    []uint64 // current content, in words
	exists bool

	words     []wordModel // per word, as far as the object ever reached
	mustExist bool        // a crash must leave the object
	mayExist  bool        // a crash may leave the object
	minWords  int         // a crash leaves at least this size
	maxWords  int         // and at most this one
}

func (o *objModel) reach(n int) {
	for len(o.words) < n {
		o.words = append(o.words, wordModel{})
	}
	o.maxWords = max(o.maxWords, n)
}

func (o *objModel) write(off, n int, id uint64, fua bool) {
	end := off + n
	if len(o.cur) < end {
		o.cur = append(o.cur, make([]uint64, end-len(o.cur))...)
	}
	o.exists, o.mayExist = true, true
	o.reach(end)
	for i := off; i < end; i++ {
		o.cur[i] = id
		if fua {
			o.words[i] = wordModel{must: id}
		} else {
			o.words[i].add(id)
		}
	}
	if fua {
		o.mustExist = true
		o.minWords = max(o.minWords, end)
	}
}

func (o *objModel) truncate(n int) {
	old := len(o.cur)
	if n < old {
		o.cur = o.cur[:n]
	} else {
		o.cur = append(o.cur, make([]uint64, n-old)...)
	}
	o.reach(n)
	for i := min(n, old); i < len(o.words); i++ {
		o.words[i].add(0)
	}
	o.minWords = min(o.minWords, n)
}

func (o *objModel) delete() {
	o.cur, o.exists = nil, false
	for i := range o.words {
		o.words[i].add(0)
	}
	o.minWords, o.mustExist = 0, false
}

func (o *objModel) copyFrom(src *objModel) {
	o.cur, o.exists, o.mayExist = slices.Clone(src.cur), true, true
	o.reach(len(src.cur))
	for i := range o.words {
		if i < len(src.cur) {
			o.words[i].add(src.cur[i])
		}
		o.words[i].add(0)
	}
	o.minWords = 0
}

// sync makes the current content the only crash outcome.
func (o *objModel) sync() {
	o.words = make([]wordModel, len(o.cur))
	for i, v := range o.cur {
		o.words[i].must = v
	}
	o.mustExist, o.mayExist = o.exists, o.exists
	o.minWords, o.maxWords = len(o.cur), len(o.cur)
}

// check compares the crashed store's object with the model.
func (o *objModel) check(t *testing.T, s store.Store, name string) {
	t.Helper()
	size, err := s.Stat(t.Context(), name)
	if errors.Is(err, errs.ErrNotFound) {
		if o.mustExist {
			t.Errorf("object %q lost in the crash", name)
		}
		return
	}
	if err != nil {
		t.Fatalf("Stat(%q): %v", name, err)
	}
	if !o.mayExist {
		t.Errorf("object %q appeared in the crash", name)
		return
	}
	if size < int64(o.minWords*wordSize) || size > int64(o.maxWords*wordSize) {
		t.Errorf("object %q: size %d after crash, want %d to %d",
			name, size, o.minWords*wordSize, o.maxWords*wordSize)
		return
	}
	data := readAll(t, s, name)
	for i := 0; i < len(data); i += wordSize {
		var buf [wordSize]byte
		copy(buf[:], data[i:])
		v := binary.LittleEndian.Uint64(buf[:])
		w := o.words[i/wordSize]
		if i+wordSize > len(data) { // a torn last word: compare its bytes only
			mask := uint64(1)<<(8*(len(data)-i)) - 1
			ok := v == 0 || v == w.must&mask
			for _, a := range w.alts {
				ok = ok || v == a&mask
			}
			if !ok {
				t.Errorf("object %q: partial word %d is %#x after crash", name, i/wordSize, v)
			}
			continue
		}
		if !w.allows(v) {
			t.Errorf("object %q: word %d is %#x after crash; must be %#x or one of %#x",
				name, i/wordSize, v, w.must, w.alts)
			return
		}
	}
}

// crashModel drives a store and its model with the same random operations.
type crashModel struct {
	t     *testing.T
	s     store.Store
	rng   *rand.Rand
	objs  map[string]*objModel
	locks map[string]string
	id    uint64
}

var crashNames = []string{"c0", "c1", "c2", "c3", "c4"}

const crashMaxWords = 512

func (m *crashModel) step() {
	t, ctx, s := m.t, m.t.Context(), m.s
	name := crashNames[m.rng.IntN(len(crashNames))]
	o := m.objs[name]
	switch r := m.rng.IntN(100); {
	case r < 55:
		off := m.rng.IntN(crashMaxWords - 64)
		n := 1 + m.rng.IntN(64)
		fua := m.rng.IntN(3) == 0
		m.id++
		p := make([]byte, n*wordSize)
		for i := range n {
			binary.LittleEndian.PutUint64(p[i*wordSize:], m.id)
		}
		write(t, s, name, p, int64(off*wordSize), fua)
		o.write(off, n, m.id, fua)
	case r < 65:
		n := m.rng.IntN(crashMaxWords)
		err := s.Truncate(ctx, name, int64(n*wordSize))
		if !o.exists {
			wantErr(t, "Truncate of a missing object", err, errs.ErrNotFound)
			return
		}
		if err != nil {
			t.Fatalf("Truncate(%q, %d): %v", name, n*wordSize, err)
		}
		o.truncate(n)
	case r < 72:
		err := s.Delete(ctx, name)
		if !o.exists {
			wantErr(t, "Delete of a missing object", err, errs.ErrNotFound)
			return
		}
		if err != nil {
			t.Fatalf("Delete(%q): %v", name, err)
		}
		o.delete()
	case r < 82:
		src := crashNames[m.rng.IntN(len(crashNames))]
		err := s.Copy(ctx, src, name)
		if !m.objs[src].exists {
			wantErr(t, "Copy of a missing object", err, errs.ErrNotFound)
			return
		}
		if err != nil {
			t.Fatalf("Copy(%q, %q): %v", src, name, err)
		}
		if src != name {
			o.copyFrom(m.objs[src])
		}
	case r < 90:
		if err := s.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		for _, o := range m.objs {
			o.sync()
		}
	default:
		l, ok := s.(store.Locker)
		if !ok {
			return
		}
		owner := fmt.Sprintf("owner%d", m.rng.IntN(2))
		if held := m.locks[name]; held != "" {
			force := m.rng.IntN(2) == 0
			err := l.Unlock(ctx, name, owner, force)
			if held != owner && !force {
				wantErr(t, "Unlock by another owner", err, errs.ErrNotOwner)
				return
			}
			if err != nil {
				t.Fatalf("Unlock(%q, %q, force=%v) of a lock held by %q: %v", name, owner, force, held, err)
			}
			delete(m.locks, name)
			return
		}
		if err := l.TryLock(ctx, name, owner); err != nil {
			t.Fatalf("TryLock(%q, %q): %v", name, owner, err)
		}
		m.locks[name] = owner
	}
}

// check compares the crashed store c with the model, then makes the model
// match what c holds, as durable.
func (m *crashModel) check(c store.Store) {
	t := m.t
	for _, name := range crashNames {
		m.objs[name].check(t, c, name)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, name := range list(t, c, "") {
		if _, ok := m.objs[name]; !ok {
			t.Fatalf("object %q appeared in the crash", name)
		}
	}
	if l, ok := c.(store.Locker); ok {
		for _, name := range crashNames {
			wantOwner(t, l, name, m.locks[name])
		}
	}
	for _, name := range crashNames {
		o := &objModel{}
		if size, err := c.Stat(t.Context(), name); err == nil {
			data := readAll(t, c, name)
			if size%wordSize != 0 {
				t.Fatalf("object %q: torn size %d after crash; the model cannot go on", name, size)
			}
			o.exists = true
			for i := 0; i < len(data); i += wordSize {
				o.cur = append(o.cur, binary.LittleEndian.Uint64(data[i:]))
			}
		}
		o.sync()
		m.objs[name] = o
	}
	m.s = c
}

// testCrashRandom runs two rounds of random operations, each ended by a
// crash that is checked against the model.
func testCrashRandom[S CrashableStore[S]](t *testing.T, s S, seed uint64) {
	m := &crashModel{
		t:     t,
		s:     s,
		rng:   rand.New(rand.NewPCG(seed, 0xc0ffee)),
		objs:  make(map[string]*objModel),
		locks: make(map[string]string),
	}
	for _, name := range crashNames {
		m.objs[name] = &objModel{}
	}
	for range 2 {
		for range 50 + m.rng.IntN(150) {
			m.step()
		}
		c := crash(t, s)
		m.check(c)
		s = c
	}
}
