package xseg

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// TestCheckPortTable damages one field of the port table at a time, on a
// segment with a bound port and traffic behind it, and expects Check to
// name the port; the segment is sound again once the field is restored.
func TestCheckPortTable(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	srv, err := s.Bind(1)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetName("blocker\tb é") // shown as blocker_b___
	if ps, _ := s.PortStat(1); ps.Name != "blocker_b___" {
		t.Errorf("role name shown as %q", ps.Name)
	}
	cli, err := s.Bind(2)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := cli.Alloc(0)
	cli.Submit(r, 1)
	buf := make([]*Request, 4)
	srv.RespondAll(srv.Accept(buf), []error{errs.ErrIO})
	cli.Put(cli.Receive(buf)[0])
	if err := s.Check(); err != nil {
		t.Fatalf("sound segment: %v", err)
	}
	bound, unbound := s.port(1), s.port(3)
	for _, c := range []struct {
		name   string
		damage func() func() // returns the repair
	}{
		{"unbound port with a start time", func() func() {
			unbound.ownerStart.Store(12345)
			return func() { unbound.ownerStart.Store(0) }
		}},
		{"unbound port with a doorbell", func() func() {
			unbound.bell.Store(7)
			return func() { unbound.bell.Store(0) }
		}},
		{"owner pid beyond pid_max", func() func() {
			old := bound.ownerPID.Load()
			bound.ownerPID.Store(0xdeadbeef)
			return func() { bound.ownerPID.Store(old) }
		}},
		{"bound port without start time", func() func() {
			old := bound.ownerStart.Load()
			bound.ownerStart.Store(0)
			return func() { bound.ownerStart.Store(old) }
		}},
		{"doorbell of another binding", func() func() {
			bound.bell.Store(bound.bindGen.Load() + 5)
			return func() { bound.bell.Store(0) }
		}},
		{"in-flight count beyond the pool", func() func() {
			old := bound.inflight.Load()
			bound.inflight.Store(1 << 30)
			return func() { bound.inflight.Store(old) }
		}},
		{"more failed than served", func() func() {
			old := bound.failed.Load()
			bound.failed.Store(1000)
			return func() { bound.failed.Store(old) }
		}},
		{"garbage in the role name", func() func() {
			old := bound.name
			bound.name[3] = 0xff
			return func() { bound.name = old }
		}},
		{"bytes after the role name's end", func() func() {
			old := bound.name
			bound.name[20] = 'x'
			return func() { bound.name = old }
		}},
	} {
		repair := c.damage()
		err := s.Check()
		repair()
		if !errors.Is(err, errs.ErrCorrupt) || !strings.Contains(err.Error(), "port ") {
			t.Errorf("%s: Check says %v, want ErrCorrupt naming the port", c.name, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("%s: repaired segment: %v", c.name, err)
		}
	}
	srv.Release()
	cli.Release()
}

// TestJoinRefusesDamagedLayout: a header whose offsets do not follow from
// its geometry would send every process outside the mapping.
func TestJoinRefusesDamagedLayout(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	for _, c := range []struct {
		name string
		f    *uint64
	}{{"rings", &s.h.ringsOff}, {"requests", &s.h.reqsOff}, {"heap", &s.h.heapOff}} {
		old := *c.f
		*c.f = old + 1<<30
		_, err := Join(s.Name())
		check := s.Check()
		*c.f = old
		if !errors.Is(err, errs.ErrCorrupt) {
			t.Errorf("join with a damaged %s offset: %v, want ErrCorrupt", c.name, err)
		}
		if !errors.Is(check, errs.ErrCorrupt) {
			t.Errorf("check with a damaged %s offset: %v, want ErrCorrupt", c.name, check)
		}
	}
	j, err := Join(s.Name())
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
}

// TestUnlinked: a process notices that the file it mapped was removed or
// replaced.
func TestUnlinked(t *testing.T) {
	s := testSegment(t, 8, 4, 2)
	if u := s.Unlinked(); u != "" {
		t.Fatalf("fresh segment: %s", u)
	}
	tmp := shmPath(s.Name()) + ".moved"
	if err := os.Rename(shmPath(s.Name()), tmp); err != nil {
		t.Fatal(err)
	}
	if u := s.Unlinked(); !strings.Contains(u, "removed") {
		t.Errorf("removed segment: %q", u)
	}
	other, err := Create(Config{Name: s.Name(), SizeMiB: 8, Ports: 4, DynPorts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Unlinked(); !strings.Contains(u, "replaced") {
		t.Errorf("replaced segment: %q", u)
	}
	other.Close()
	if err := os.Rename(tmp, shmPath(s.Name())); err != nil {
		t.Fatal(err)
	}
	if u := s.Unlinked(); u != "" {
		t.Errorf("segment back in place: %s", u)
	}
}
