package mapper

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
)

// TestCheckReplyIsVolclientReport: the engine's check report, which CHECK
// answers as JSON, decodes into volclient's mirror with no field unknown
// or lost; so do the request and the progress (volclient cannot import
// volume: the JSON is the contract). The kinds are the same strings.
func TestCheckReplyIsVolclientReport(t *testing.T) {
	var rep volume.CheckReport
	n := 0
	fill(reflect.ValueOf(&rep).Elem(), &n)
	var got volclient.CheckReport
	roundTrip(t, &rep, &got)
	var p checkProgress
	fill(reflect.ValueOf(&p).Elem(), &n)
	roundTrip(t, &p, &volclient.CheckProgress{})
	for _, k := range [][2]string{
		{volume.ProblemUnreadable, volclient.ProblemUnreadable},
		{volume.ProblemDangling, volclient.ProblemDangling},
		{volume.ProblemDamagedCopy, volclient.ProblemDamagedCopy},
		{volume.ProblemOwnedBelowShared, volclient.ProblemOwnedBelowShared},
		{volume.ProblemOwnedTwice, volclient.ProblemOwnedTwice},
		{volume.ProblemOwnedShared, volclient.ProblemOwnedShared},
		{volume.ProblemBeyondSize, volclient.ProblemBeyondSize},
		{volume.ProblemBadPrefix, volclient.ProblemBadPrefix},
		{volume.ProblemMissingData, volclient.ProblemMissingData},
		{volume.ProblemEpochBehind, volclient.ProblemEpochBehind},
		{volume.ProblemEpochMissing, volclient.ProblemEpochMissing},
	} {
		if k[0] != k[1] {
			t.Errorf("kind %q in volume, %q in volclient", k[0], k[1])
		}
	}
}

// roundTrip encodes from, decodes it into to (no unknown field) and
// checks that to encodes the same.
func roundTrip(t *testing.T, from, to any) {
	t.Helper()
	b, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(to); err != nil {
		t.Fatalf("%T from %s: %v", to, b, err)
	}
	back, err := json.Marshal(to)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, b) {
		t.Fatalf("%T lost fields:\n%s\nwant\n%s", to, back, b)
	}
}
