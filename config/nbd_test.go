package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

// TestNBDTLSKeys: the handshake timeout and TLS keys of an nbd_endpoint.
func TestNBDTLSKeys(t *testing.T) {
	c := mustParse(t, "[nbd]\nlisten = 0.0.0.0:10809\nhandshake_timeout = 3\ntls = REQUIRE\ntls_dir = /srv/pki/\ntls_verify_clients = no\n")
	r, _ := c.Role("nbd")
	if r.HandshakeTimeout != 3 || r.TLS != TLSRequire || r.TLSDir != "/srv/pki" || r.TLSVerifyClients {
		t.Errorf("got %+v", r)
	}
	for text, want := range map[string]string{
		"[nbd]\ntls = require\n":                 "t.conf:2: [nbd] tls = require: no listen address",
		"[nbd]\nlisten = [::1]:1\ntls = maybe\n": "t.conf:3: [nbd] tls = maybe: not a TLS policy (off or require)",
		"[nbd]\nhandshake_timeout = 0\n":         "t.conf:2: [nbd] handshake_timeout = 0: must be at least 1",
		"[nbd]\nhandshake_timeout = 10s\n":       "t.conf:2: [nbd] handshake_timeout = 10s: not a number",
		"[nbd]\ntls_dir = pki\n":                 "t.conf:2: [nbd] tls_dir = pki: not an absolute path",
		"[nbd]\ntls_verify_clients = perhaps\n":  "t.conf:2: [nbd] tls_verify_clients = perhaps: not a boolean",
		"[vlmcd]\ntls = require\n":               "t.conf:2: [vlmcd] tls = require: unknown key for a vlmcd (tls is a key of nbd_endpoint)",
	} {
		_, err := Parse("t.conf", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
}
