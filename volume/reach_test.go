package volume

import "testing"

func TestParseObjectName(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
		o  objectName
	}{
		{DataObject("vm1", 7, 0x2a), true, objectName{prefix: "vm1", epoch: 7, key: pageKey{0, 0x2a}}},
		{pageObject("a_b", 1<<40, pageKey{2, 3}), true, objectName{prefix: "a_b", epoch: 1 << 40, page: true, key: pageKey{2, 3}}},
		{"vm1", false, objectName{}},
		{"vm1_epoch", false, objectName{}},
		{"vm1_lock", false, objectName{}},
		{"_0000000000000001_0000000000000002", false, objectName{}},
		{DataObject("archip_x", 1, 1), false, objectName{}},
		{"vm1_000000000000000g_0000000000000002", false, objectName{}},
	} {
		o, ok := parseObjectName(tc.s)
		if ok != tc.ok || o != tc.o {
			t.Errorf("parseObjectName(%q) = %+v, %v; want %+v, %v", tc.s, o, ok, tc.o, tc.ok)
		}
	}
}
