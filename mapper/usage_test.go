package mapper

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/archipelago-go/archipelago/volclient"
	"github.com/archipelago-go/archipelago/volume"
)

// fill sets every field of v (a pointer), through structs, slices of one
// element and pointers, to a value of its own (n counts on), so that a
// field that does not make it through a JSON round trip shows.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		v.SetUint(uint64(*n))
	}
}

// TestUsageReplyIsVolclientReport: the engine's report, which USAGE
// answers as JSON, decodes into volclient's mirror with no field unknown
// or lost (volclient cannot import volume: the JSON is the contract).
func TestUsageReplyIsVolclientReport(t *testing.T) {
	var rep volume.UsageReport
	n := 0
	fill(reflect.ValueOf(&rep).Elem(), &n)
	b, err := json.Marshal(&rep)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var got volclient.UsageReport
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("volclient.UsageReport from %s: %v", b, err)
	}
	back, err := json.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	var x, y any
	json.Unmarshal(b, &x)
	json.Unmarshal(back, &y)
	if !reflect.DeepEqual(x, y) {
		t.Errorf("the engine's report\n%s\nthrough volclient's\n%s", b, back)
	}
	// And the request: volclient's options reach the mapper's.
	q, _ := json.Marshal(map[string]any{"names": []string{"a", "b"}, "held": true})
	var r usageRequest
	if err := json.Unmarshal(q, &r); err != nil || !reflect.DeepEqual(r, usageRequest{Names: []string{"a", "b"}, Held: true}) {
		t.Errorf("usageRequest %+v, %v", r, err)
	}
}
