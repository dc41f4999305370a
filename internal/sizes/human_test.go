package sizes

import "testing"

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0B"}, {1, "1B"}, {1023, "1023B"}, {1024, "1K"}, {1536, "1.5K"},
		{1100, "1.1K"}, {10*1024 + 300, "10K"}, {10*1024 + 600, "11K"},
		{4 << 20, "4M"}, {812<<20 + 12345, "812M"}, {1<<40 + 1<<38, "1.3T"},
		{1<<30 - 1, "1024M"}, {1 << 60, "1E"}, {^uint64(0), "16E"},
	} {
		if got := Human(tc.n); got != tc.want {
			t.Errorf("Human(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
