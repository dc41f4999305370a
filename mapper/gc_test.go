package mapper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
	"github.com/archipelago-go/archipelago/wire"
)

// sameJSON checks that v, encoded, decodes into mirror (a pointer) with no
// field unknown, and that mirror encodes back to the same document.
func sameJSON(t *testing.T, v, mirror any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(mirror); err != nil {
		t.Fatalf("%T from %s: %v", mirror, b, err)
	}
	back, err := json.Marshal(mirror)
	if err != nil {
		t.Fatal(err)
	}
	var x, y any
	json.Unmarshal(b, &x)
	json.Unmarshal(back, &y)
	if !reflect.DeepEqual(x, y) {
		t.Errorf("the mapper's\n%s\nthrough %T\n%s", b, mirror, back)
	}
}

// TestGCReplyIsVolclientReport: GC's answers (the report, with the names
// left out counted, and the status) decode into volclient's mirrors with
// no field unknown or lost; volclient's request reaches the mapper's.
func TestGCReplyIsVolclientReport(t *testing.T) {
	var rep gcReply
	n := 0
	fill(reflect.ValueOf(&rep).Elem(), &n)
	sameJSON(t, &rep, &volclient.GCReport{})
	var p volume.GCProgress
	fill(reflect.ValueOf(&p).Elem(), &n)
	sameJSON(t, &p, &volclient.GCProgress{})
	q, _ := json.Marshal(map[string]any{"dry_run": true, "force": true, "status": true})
	var r gcRequest
	if err := json.Unmarshal(q, &r); err != nil || r != (gcRequest{DryRun: true, Force: true, Status: true}) {
		t.Errorf("gcRequest %+v, %v", r, err)
	}
}

// TestFitGCReply: a report whose object names do not fit the reply's
// buffer keeps as many as fit, counts the others, and keeps every count.
func TestFitGCReply(t *testing.T) {
	rep := &volume.GCReport{DryRun: true, Listed: 5000, Deleted: 3000, DeletedData: 2990, DeletedPages: 10, Bytes: 1 << 40}
	for i := range 3000 {
		rep.Objects = append(rep.Objects, fmt.Sprintf("volume-%04d_%016x_%016x", i, 2, i))
	}
	for _, n := range []int{1 << 20, 64 << 10, 4 << 10, 300} {
		out, err := fitGCReply(rep, n)
		if err != nil {
			t.Fatal(err)
		}
		d, err := wire.NewDoc(out)
		if err != nil {
			t.Fatal(err)
		}
		kept := len(out.Objects)
		switch {
		case d.EncodedSize() > n && kept > 0:
			t.Errorf("buffer %d: the reply takes %d bytes with %d names", n, d.EncodedSize(), kept)
		case kept+out.ObjectsOmitted != 3000:
			t.Errorf("buffer %d: %d names kept, %d omitted, of 3000", n, kept, out.ObjectsOmitted)
		case n == 1<<20 && out.ObjectsOmitted != 0:
			t.Errorf("buffer %d: %d names omitted, all fit", n, out.ObjectsOmitted)
		case n < 1<<20 && kept > 0 && !reflect.DeepEqual(out.Objects, rep.Objects[:kept]):
			t.Errorf("buffer %d: the names kept are not the first ones", n)
		case out.Deleted != 3000 || out.Bytes != 1<<40 || out.Listed != 5000:
			t.Errorf("buffer %d: counts changed: %+v", n, out.GCReport)
		}
		if n == 4<<10 && (kept == 0 || out.ObjectsOmitted == 0) {
			t.Errorf("buffer %d: %d kept, %d omitted: want some of each", n, kept, out.ObjectsOmitted)
		}
	}
	if len(rep.Objects) != 3000 {
		t.Error("fitGCReply changed the engine's report")
	}
}

// TestGCRunOneAtATime: a second collection on the same mapper is refused
// (ErrBusy, saying which runs), the status answers the running one's
// progress, and idle once it ends.
func TestGCRunOneAtATime(t *testing.T) {
	var g gcRun
	if p := g.status(); p.Phase != gcIdle {
		t.Fatalf("status before any: %+v", p)
	}
	if err := g.begin("periodic"); err != nil {
		t.Fatal(err)
	}
	g.update(volume.GCProgress{Phase: "marking", Listed: 7, Reachable: 3})
	err := g.begin("requested")
	if !errors.Is(err, errs.ErrBusy) || !bytes.Contains([]byte(err.Error()), []byte("periodic garbage collection has been running on this host")) {
		t.Errorf("second begin: %v", err)
	}
	if p := g.status(); p != (volume.GCProgress{Phase: "marking", Listed: 7, Reachable: 3}) {
		t.Errorf("status while running: %+v", p)
	}
	g.end()
	if p := g.status(); p.Phase != gcIdle || p.Listed != 0 {
		t.Errorf("status after the end: %+v", p)
	}
	g.update(volume.GCProgress{Phase: "late"}) // a late call of the engine changes nothing
	if p := g.status(); p.Phase != gcIdle {
		t.Errorf("status after a late update: %+v", p)
	}
	if err := g.begin("requested"); err != nil {
		t.Errorf("begin after the end: %v", err)
	}
}
