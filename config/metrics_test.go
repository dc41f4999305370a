package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// TestMetricsListen: metrics_listen of mapperd and vlmcd, off by default,
// checked as an address, unique, and refused on other roles; Format and
// Parse keep it.
func TestMetricsListen(t *testing.T) {
	for _, r := range Default().Roles {
		if r.MetricsListen != "" {
			t.Errorf("default: [%s] metrics_listen = %q, want none", r.Name, r.MetricsListen)
		}
	}
	c := mustParse(t, "[vlmcd]\nmetrics_listen = 127.0.0.1:9570\n[mapperd]\nmetrics_listen = [::1]:9571\n")
	v, _ := c.Role("vlmcd")
	m, _ := c.Role("mapperd")
	if v.MetricsListen != "127.0.0.1:9570" || m.MetricsListen != "[::1]:9571" {
		t.Errorf("vlmcd %q, mapperd %q", v.MetricsListen, m.MetricsListen)
	}
	back := mustParse(t, c.Format())
	if v2, _ := back.Role("vlmcd"); v2.MetricsListen != v.MetricsListen {
		t.Errorf("Format/Parse: vlmcd metrics_listen %q, want %q", v2.MetricsListen, v.MetricsListen)
	}
	for text, want := range map[string]string{
		"[vlmcd]\nmetrics_listen = localhost\n":                                        "t.conf:2: [vlmcd] metrics_listen = localhost: not a TCP address host:port",
		"[mapperd]\n\nmetrics_listen = :0\n":                                           `t.conf:3: [mapperd] metrics_listen = :0: port "0" is not a number in 1..65535`,
		"[vlmcd]\nmetrics_listen = :9570\n[mapperd]\nmetrics_listen = :9570\n":         "t.conf:2: [vlmcd] metrics_listen = :9570: also the metrics_listen of [mapperd]",
		"[nbd]\nlisten = 127.0.0.1:10809\n[vlmcd]\nmetrics_listen = 127.0.0.1:10809\n": "t.conf:4: [vlmcd] metrics_listen = 127.0.0.1:10809: also the listen address of [nbd]",
		"[blockerb]\nmetrics_listen = :9570\n":                                         "t.conf:2: [blockerb] metrics_listen = :9570: unknown key for a file_blocker (metrics_listen is a key of mapperd, vlmcd)",
	} {
		_, err := Parse("t.conf", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one error %q", text, err, want)
		}
	}
}
