package config

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

func hostedNames(c *Config) []string {
	var n []string
	for _, r := range c.HostedRoles() {
		n = append(n, r.Name)
	}
	return n
}

// TestHosted: [PEERS] HOSTED marks its roles (in ORDER, whatever order it
// lists them in), `all` marks every role of ROLES, the default hosts
// every role, hosted roles log to the host's log, and Format and Parse keep it.
func TestHosted(t *testing.T) {
	if n := hostedNames(Default()); !slices.Equal(n, []string{"blockerb", "blockerm", "mapperd", "vlmcd", "nbd"}) {
		t.Errorf("default HOSTED = %v, want every role", n)
	}
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"[PEERS]\nHOSTED = vlmcd, blockerb mapperd\n", []string{"blockerb", "mapperd", "vlmcd"}},
		{"[PEERS]\nhosted = all  # every role\n", []string{"blockerb", "blockerm", "mapperd", "vlmcd", "nbd"}},
		{"[PEERS]\nHOSTED =\n", nil},
		// ROLES of the file: `all` follows it.
		{"[PEERS]\nROLES = blockerb blockerm mapperd vlmcd\nHOSTED = all\n", []string{"blockerb", "blockerm", "mapperd", "vlmcd"}},
		// ORDER decides the order.
		{"[PEERS]\nORDER = blockerm blockerb mapperd vlmcd nbd\nHOSTED = blockerb blockerm\n", []string{"blockerm", "blockerb"}},
	} {
		c := mustParse(t, tc.text)
		if got := hostedNames(c); !slices.Equal(got, tc.want) {
			t.Errorf("%q: hosted %v, want %v", tc.text, got, tc.want)
		}
		for _, r := range c.Roles {
			want := c.LogDir + "/" + r.Name + ".log"
			if r.Hosted {
				want = c.LogDir + "/archipelagod.log"
			}
			if got := c.LogFile(r.Name); got != want {
				t.Errorf("%q: LogFile(%s) = %s, want %s", tc.text, r.Name, got, want)
			}
		}
		out := c.Format()
		back, err := Parse("t.conf", []byte(out))
		if err != nil {
			t.Fatalf("%q: Format output does not parse: %v\n%s", tc.text, err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("%q: round trip differs: hosted %v, want %v\n%s", tc.text, hostedNames(back), hostedNames(c), out)
		}
	}
	if c := Default(); c.HostLogFile() != "/var/log/archipelago/archipelagod.log" {
		t.Errorf("HostLogFile = %s", c.HostLogFile())
	}
}

// TestHostedValidation: a name that is not a role, a name twice, `all`
// beside names, and a role of a type archipelagod cannot host are each
// refused, naming the file and line.
func TestHostedValidation(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"[PEERS]\nHOSTED = vlmcd ghost\n", `t.conf:2: [PEERS] HOSTED = vlmcd ghost: role "ghost" is not in [PEERS] ROLES`},
		{"[PEERS]\nROLES = blockerb blockerm mapperd vlmcd\n\nHOSTED = nbd\n", `t.conf:4: [PEERS] HOSTED = nbd: role "nbd" is not in [PEERS] ROLES`},
		{"[PEERS]\nHOSTED = vlmcd,vlmcd\n", `t.conf:2: [PEERS] HOSTED = vlmcd,vlmcd: role "vlmcd" listed twice`},
		{"[PEERS]\nHOSTED = all nbd\n", `t.conf:2: [PEERS] HOSTED = all nbd: "all" stands alone (every role) or not at all`},
	} {
		_, err := Parse("t.conf", []byte(tc.text))
		if err == nil || !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one error %q", tc.text, err, tc.want)
		}
	}

	// A type archipelagod cannot host (today it hosts every type: take
	// one away to see the check).
	saved := HostableTypes
	HostableTypes = slices.DeleteFunc(slices.Clone(saved), func(s string) bool { return s == TypeNBDEndpoint })
	defer func() { HostableTypes = saved }()
	text := "[PEERS]\nHOSTED = all\n"
	want := `t.conf:2: [PEERS] HOSTED = all: role "nbd" is of type nbd_endpoint, which archipelagod cannot host (it hosts file_blocker, rados_blocker, mapperd, vlmcd): run it in its own program (leave it out of HOSTED)`
	_, err := Parse("t.conf", []byte(text))
	if err == nil || !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("%q: error %v, want one error %q", text, err, want)
	}
}
