package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/archipelago-go/archipelago/errs"
)

// Files of a TLS directory, in the layout of QEMU's tls-creds-x509
// (endpoint=server) and of libnbd's tls-certificates.
const (
	TLSCACert     = "ca-cert.pem"
	TLSServerCert = "server-cert.pem"
	TLSServerKey  = "server-key.pem"
)

// LoadTLSDir reads the server certificate and key of dir (PEM) and, if
// verifyClients, its CA certificate(s): clients must then present a
// certificate signed by one of them. Errors name the file.
func LoadTLSDir(dir string, verifyClients bool) (*tls.Config, error) {
	cf, kf := filepath.Join(dir, TLSServerCert), filepath.Join(dir, TLSServerKey)
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		return nil, fmt.Errorf("nbd TLS: certificate %s with key %s: %w: %w", cf, kf, errs.ErrInvalid, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if !verifyClients {
		return c, nil
	}
	caf := filepath.Join(dir, TLSCACert)
	b, err := os.ReadFile(caf)
	if err != nil {
		return nil, fmt.Errorf("nbd TLS: CA of the clients' certificates: %w: %w", errs.ErrInvalid, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("nbd TLS: %s holds no PEM certificate: %w", caf, errs.ErrInvalid)
	}
	c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	return c, nil
}
