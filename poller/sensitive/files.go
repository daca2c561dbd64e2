package sensitive

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Secret returns a secret set inline or in a file (the settings name and
// name-file, at most one of the two), the file's content without its
// final line break. No secret is "".
func Secret(name, inline, file string) (string, error) {
	switch {
	case inline != "" && file != "":
		return "", fmt.Errorf("%s and %s-file: set one", name, name)
	case file == "":
		return inline, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s-file %s: %w", name, file, WithoutPath(err))
	}
	s := strings.TrimRight(string(raw), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s-file %s: empty", name, file)
	}
	return s, nil
}

// LoadTLSFiles reads the CA file and the client certificate and key of the
// settings <engine>-ca, <engine>-cert and <engine>-key. The pool is nil
// without a CA file (the system's CAs), the certificates empty without a
// client certificate. Errors name the settings and the files, never a
// key's content.
func LoadTLSFiles(engine, ca, cert, key string) (*x509.CertPool, []tls.Certificate, error) {
	var errs []error
	var pool *x509.CertPool
	if ca != "" {
		raw, err := os.ReadFile(ca)
		pool = x509.NewCertPool()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-ca %s: %w", engine, ca, WithoutPath(err)))
		} else if !pool.AppendCertsFromPEM(raw) {
			errs = append(errs, fmt.Errorf("%s-ca %s: no PEM certificate in it", engine, ca))
		}
	}
	var certs []tls.Certificate
	switch {
	case cert != "" && key != "":
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-cert %s and %s-key %s: %w", engine, cert, engine, key, WithoutPath(err)))
		}
		certs = []tls.Certificate{c}
	case cert != "":
		errs = append(errs, fmt.Errorf("%s-cert: needs %s-key, the certificate's private key", engine, engine))
	case key != "":
		errs = append(errs, fmt.Errorf("%s-key: needs %s-cert, the client certificate", engine, engine))
	}
	return pool, certs, errors.Join(errs...)
}

// WithoutPath returns a file error without the path, which the caller
// names already: "permission denied", not "open /x: permission denied".
func WithoutPath(err error) error {
	var perr *os.PathError
	if errors.As(err, &perr) {
		return perr.Err
	}
	return err
}
