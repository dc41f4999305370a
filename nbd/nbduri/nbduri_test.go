package nbduri

import "testing"

func TestURI(t *testing.T) {
	for _, k := range [][3]string{
		{"/run/archipelago/nbd.sock", "vol1", "nbd+unix:///vol1?socket=/run/archipelago/nbd.sock"},
		{"/tmp/a b/s", "my vol@snap", "nbd+unix:///my%20vol@snap?socket=/tmp/a%20b/s"},
		{"/s", "a?b#c&d", "nbd+unix:///a%3Fb%23c%26d?socket=/s"},
		{"/s", "", "nbd+unix:///?socket=/s"},
	} {
		if got := URI(k[0], k[1]); got != k[2] {
			t.Errorf("URI(%q, %q) = %q, want %q", k[0], k[1], got, k[2])
		}
	}
}
