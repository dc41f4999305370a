// Package testpki makes certificates for tests of NBD over TLS: a CA, a
// server certificate for localhost and 127.0.0.1, and a client
// certificate, written in the directory layout of QEMU's tls-creds-x509
// and libnbd's tls-certificates (ca-cert.pem, server-cert.pem,
// server-key.pem, client-cert.pem, client-key.pem).
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that signs leaf certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func template(cn string) *x509.Certificate {
	serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano() + serial),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"archipelago tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
}

// NewCA returns a fresh CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	k := newKey(t)
	tm := template(cn)
	tm.IsCA, tm.BasicConstraintsValid = true, true
	tm.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tm, tm, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{cert: c, key: k, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf signs a certificate for cn: a server one (for localhost and
// 127.0.0.1) or a client one. It returns the certificate and key, PEM.
func (ca *CA) leaf(t testing.TB, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	k := newKey(t)
	tm := template(cn)
	tm.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	if server {
		tm.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tm.DNSNames = []string{"localhost"}
		tm.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	} else {
		tm.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tm, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// ServerDir writes ca-cert.pem, server-cert.pem and server-key.pem in a
// fresh directory and returns it.
func (ca *CA) ServerDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	c, k := ca.leaf(t, "localhost", true)
	write(t, dir, "ca-cert.pem", ca.pem)
	write(t, dir, "server-cert.pem", c)
	write(t, dir, "server-key.pem", k)
	return dir
}

// ClientDir writes ca-cert.pem (of trusted, the CA that signed the
// server's certificate) and, unless ca is nil, client-cert.pem and
// client-key.pem signed by ca, in a fresh directory and returns it.
func ClientDir(t testing.TB, trusted, ca *CA, cn string) string {
	t.Helper()
	dir := t.TempDir()
	write(t, dir, "ca-cert.pem", trusted.pem)
	if ca != nil {
		c, k := ca.leaf(t, cn, false)
		write(t, dir, "client-cert.pem", c)
		write(t, dir, "client-key.pem", k)
	}
	return dir
}

func write(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
