package volume

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archipelago/store/memstore"
)

// memIntents is a volume.Intents in memory that outlives the engines of
// a test (as the mapper's file outlives a killed mapperd).
type memIntents struct {
	mu    sync.Mutex
	names map[string]int
	begun []string // every Begin, in order
}

func (m *memIntents) Begin(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names == nil {
		m.names = map[string]int{}
	}
	m.names[name]++
	m.begun = append(m.begun, name)
	return nil
}

func (m *memIntents) End(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names[name] > 0 {
		m.names[name]--
	}
	if m.names[name] == 0 {
		delete(m.names, name)
	}
}

func (m *memIntents) Pending() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// TestIntentsGiveBackInterruptedLocks: a mapper killed in the middle of a
// create (after it took the new volume's lock, before it gave it back)
// left the lock held by its host, which nobody on that host would ever
// release (no session used it), so another host's writes waited for good
// (seen in TestCrashUnderLoadSharedDirectory, round 87: "a lock outlived
// its writer"). The next engine of the same owner gives such locks back
// before it serves; locks kept on purpose (vlmc open/lock) and other
// owners' locks stay.
func TestIntentsGiveBackInterruptedLocks(t *testing.T) {
	ctx := context.Background()
	maps, data := memstore.New(), memstore.New()
	in := &memIntents{}
	a, err := New(maps, data, Options{Owner: "host-b", BlockSize: MinBlockSize, Intents: in})
	if err != nil {
		t.Fatal(err)
	}
	// Operations that end leave no intent, whatever they did.
	if err := a.Create(ctx, "done", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, "pinned", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := a.Open(ctx, "pinned"); err != nil { // kept on purpose
		t.Fatal(err)
	}
	if err := a.Snapshot(ctx, "done", "done-snap"); err != nil {
		t.Fatal(err)
	}
	if p, _ := in.Pending(); len(p) != 0 || len(in.begun) == 0 {
		t.Fatalf("after finished operations: pending %v (begun %v)", p, in.begun)
	}
	// The kill in the middle of a create: intent recorded, lock taken,
	// volume made, and nothing more.
	if err := in.Begin("cut"); err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, "cut", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := a.locker.TryLock(ctx, lockName("cut"), "host-b"); err != nil {
		t.Fatal(err)
	}
	// Another owner's lock with an intent of ours left behind stays its.
	if err := a.Create(ctx, "theirs", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := a.locker.TryLock(ctx, lockName("theirs"), "host-a"); err != nil {
		t.Fatal(err)
	}
	in.Begin("theirs")

	b, err := New(maps, data, Options{Owner: "host-b", BlockSize: MinBlockSize, Intents: in})
	if err != nil {
		t.Fatal(err)
	}
	if o := lockOwner(t, b, "cut"); o != "host-b" {
		t.Fatalf("before recovery the lock of cut is %q", o)
	}
	if err := b.RecoverIntents(ctx); err != nil {
		t.Fatal(err)
	}
	for vol, want := range map[string]string{"cut": "", "pinned": "host-b", "theirs": "host-a", "done": ""} {
		if o := lockOwner(t, b, vol); o != want {
			t.Errorf("after recovery %s is locked by %q, want %q", vol, o, want)
		}
	}
	if p, _ := in.Pending(); len(p) != 0 {
		t.Errorf("intents left after recovery: %v", p)
	}
	// Another host can now write where it would have waited.
	c, err := New(maps, data, Options{Owner: "host-a", BlockSize: MinBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.MapWrite(wctx, "cut", 0, 4096); err != nil {
		t.Fatalf("host-a's write to cut: %v", err)
	}
}
