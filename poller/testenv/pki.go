package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// PKI is a CA, a server certificate for 127.0.0.1 and localhost and a
// client certificate it signed, and a second CA that signed nothing the
// servers show: PEM files in a temporary directory, for the tests of TLS
// to NATS and Redis.
type PKI struct {
	// Dir holds the files.
	Dir string
	// CA is the CA's certificate; OtherCA the second CA's.
	CA, OtherCA string
	// ServerCert and ServerKey are the servers'; ClientCert and ClientKey
	// a client's.
	ServerCert, ServerKey, ClientCert, ClientKey string
}

// NewPKI writes a new PKI into a temporary directory of the test.
func NewPKI(t testing.TB) PKI {
	t.Helper()
	dir := t.TempDir()
	p := PKI{Dir: dir}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key := newKey()
		tmpl := template(name)
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key, write(name+".pem", "CERTIFICATE", der)
	}
	leaf := func(name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (string, string) {
		key := newKey()
		tmpl := template(name)
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{usage}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses, tmpl.DNSNames = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	ca, caKey, caFile := newCA("ca")
	p.CA = caFile
	p.ServerCert, p.ServerKey = leaf("server", ca, caKey, x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = leaf("client", ca, caKey, x509.ExtKeyUsageClientAuth)
	_, _, p.OtherCA = newCA("other-ca")
	return p
}

// WriteFile writes content to name in dir and returns its path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// SecureNATS runs an in-process NATS server with JetStream from a
// configuration file holding conf (its tls and authorization blocks) and
// returns its nats:// URL. It is stopped when the test ends.
func SecureNATS(t testing.TB, conf string) string {
	t.Helper()
	dir := t.TempDir()
	path := WriteFile(t, dir, "nats.conf", fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\n%s\n", filepath.Join(dir, "js"), conf))
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server configuration:\n%s\n%v", conf, err)
	}
	return "nats://" + RunNATSServer(t, opts).Addr().String()
}

// RunNATSServer starts an in-process NATS server with opts, quiet, and
// stops it when the test ends.
func RunNATSServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("the NATS server did not become ready in 10s")
	}
	return srv
}

// NATSTLS is a server tls block of SecureNATS: the server's certificate,
// and with verify the CA that signs clients' and a demand for one.
func NATSTLS(p PKI, verify bool) string {
	if verify {
		return fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }", p.ServerCert, p.ServerKey, p.CA)
	}
	return fmt.Sprintf("tls { cert_file: %q, key_file: %q }", p.ServerCert, p.ServerKey)
}

// RedisAuthServer starts a redis-server whose only user is alice, password
// pw-S3cret-right (the default user is off), on a plain port and a TLS
// port with the PKI's server certificate, verifying clients as
// authClients says (no, optional or yes). It returns the two addresses.
// Call RedisHasTLS first.
func RedisAuthServer(t testing.TB, p PKI, authClients string) (plain, tlsAddr string) {
	t.Helper()
	port := freePorts(t, 1)[0]
	plain = RedisServer(t, "--user", "default", "off", "--user", "alice", "on", ">pw-S3cret-right", "~*", "&*", "+@all",
		"--tls-port", strconv.Itoa(port), "--tls-cert-file", p.ServerCert, "--tls-key-file", p.ServerKey,
		"--tls-ca-cert-file", p.CA, "--tls-auth-clients", authClients)
	return plain, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// RedisHasTLS reports whether the redis-server on PATH was built with TLS:
// one without does not know tls-port ("Bad directive"). It skips the test
// without redis-server.
func RedisHasTLS(t testing.TB) bool {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH; install it (apt-get install redis-server) to run the Redis TLS tests")
	}
	// Listening nowhere, it exits at once.
	out, _ := exec.Command(path, "--port", "0", "--tls-port", "0", "--save", "", "--dir", t.TempDir()).CombinedOutput()
	return strings.Contains(string(out), "not to listen anywhere") || strings.Contains(string(out), "not listen anywhere")
}
