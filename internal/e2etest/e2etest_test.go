package e2etest

import (
	"testing"

	"github.com/archipelago-go/archipelago/config"
)

// TestHostedLine: the layout a test's configuration gets from its Options
// and ARCHIPELAGO_TEST_HOSTED, over a configuration that hosts nothing and
// over one whose own layout hosts every role (as the default may).
func TestHostedLine(t *testing.T) {
	parse := func(text string) *config.Config {
		c, err := config.Parse("t.conf", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	split, all := parse("[PEERS]\nHOSTED =\n"), parse("")
	for _, tc := range []struct {
		env  string
		o    Options
		cfg  *config.Config
		want string
	}{
		{"", Options{}, split, ""},
		{"", Options{NotHosted: []string{"nbd"}}, split, ""},
		{"all", Options{}, split, "HOSTED = blockerb blockerm mapperd vlmcd nbd\n"},
		{"all", Options{NotHosted: []string{"mapperd", "nbd"}}, split, "HOSTED = blockerb blockerm vlmcd\n"},
		{"all", Options{Hosted: Split}, split, "HOSTED = \n"},
		{"", Options{Hosted: "mapperd vlmcd"}, split, "HOSTED = mapperd vlmcd\n"},
		{"", Options{Hosted: config.HostedAll}, split, "HOSTED = blockerb blockerm mapperd vlmcd nbd\n"},
		// The configuration's own layout hosts every role.
		{"", Options{}, all, ""},
		{"", Options{NotHosted: []string{"vlmcd"}}, all, "HOSTED = blockerb blockerm mapperd nbd\n"},
		{"", Options{Hosted: Split}, all, "HOSTED = \n"},
	} {
		t.Setenv(HostedEnv, tc.env)
		if got := hostedLine(tc.o, tc.cfg); got != tc.want {
			t.Errorf("%s=%q, %+v, hosted %d roles: %q, want %q", HostedEnv, tc.env, tc.o, len(tc.cfg.HostedRoles()), got, tc.want)
		}
	}
}
