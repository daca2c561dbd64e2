package publisher_test

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// wantNATS connects with auth through Dial, which every command of
// capoller dials with, and wants it to work (want == "") or to fail with
// an error holding want (or one of its alternatives, " | "-separated) and
// none of secrets.
func wantNATS(t *testing.T, url, what string, auth publisher.NATSAuth, want string, secrets ...string) {
	t.Helper()
	if errs := auth.Check(url); len(errs) > 0 {
		t.Fatalf("%s: the settings do not validate: %v", what, errs)
	}
	nc, err := publisher.Dial(publisher.DialOptions{URL: url, Auth: auth, Name: "capoller test", Options: []nats.Option{nats.Timeout(5 * time.Second)}})
	if err == nil {
		err = nc.Flush()
		nc.Close()
	}
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", what, err)
	case want != "" && (err == nil || !slices.ContainsFunc(strings.Split(want, " | "), func(w string) bool { return strings.Contains(err.Error(), w) })):
		t.Errorf("%s: err = %v; want %q", what, err, want)
	}
	for _, s := range secrets {
		if err != nil && strings.Contains(err.Error(), s) {
			t.Errorf("%s: the error shows a secret: %v", what, err)
		}
	}
}

// Each way to authenticate to NATS, against a real server (over TLS, its
// CA given): the right credentials connect, wrong or missing ones are
// refused with an error that names the cause and holds no secret.
func TestNATSAuthMethods(t *testing.T) {
	p := testenv.NewPKI(t)
	tlsOn := testenv.NATSTLS(p, false)

	t.Run("token", func(t *testing.T) {
		url := testenv.SecureNATS(t, tlsOn+"\nauthorization { token: \"tok-S3cret-right\" }")
		tokenFile := testenv.WriteFile(t, t.TempDir(), "token", "tok-S3cret-right\n")
		wantNATS(t, url, "the token", publisher.NATSAuth{CA: p.CA, Token: "tok-S3cret-right"}, "")
		wantNATS(t, url, "the token from a file", publisher.NATSAuth{CA: p.CA, TokenFile: tokenFile}, "")
		wantNATS(t, url, "a wrong token", publisher.NATSAuth{CA: p.CA, Token: "tok-S3cret-wrong"}, "Authorization Violation", "tok-S3cret")
		wantNATS(t, url, "no token", publisher.NATSAuth{CA: p.CA}, "Authorization Violation", "tok-S3cret")
	})
	t.Run("user and password", func(t *testing.T) {
		url := testenv.SecureNATS(t, tlsOn+"\nauthorization { users = [{user: alice, password: \"pw-S3cret-right\"}] }")
		wantNATS(t, url, "the password", publisher.NATSAuth{CA: p.CA, User: "alice", Password: "pw-S3cret-right"}, "")
		wantNATS(t, url, "the password from a file", publisher.NATSAuth{CA: p.CA, User: "alice", PasswordFile: testenv.WriteFile(t, t.TempDir(), "pw", "pw-S3cret-right")}, "")
		wantNATS(t, url, "a wrong password", publisher.NATSAuth{CA: p.CA, User: "alice", Password: "pw-S3cret-wrong"}, "Authorization Violation", "pw-S3cret")
	})
	t.Run("nkey", func(t *testing.T) {
		seedFile := func(kp nkeys.KeyPair) string {
			seed, err := kp.Seed()
			if err != nil {
				t.Fatal(err)
			}
			return testenv.WriteFile(t, t.TempDir(), "user.nk", string(seed)+"\n")
		}
		user, other := newUser(t), newUser(t)
		pub, err := user.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		url := testenv.SecureNATS(t, tlsOn+fmt.Sprintf("\nauthorization { users = [{nkey: %s}] }", pub))
		wantNATS(t, url, "the nkey", publisher.NATSAuth{CA: p.CA, Nkey: seedFile(user)}, "")
		wantNATS(t, url, "another nkey", publisher.NATSAuth{CA: p.CA, Nkey: seedFile(other)}, "Authorization Violation", "SU")
		wantNATS(t, url, "no nkey", publisher.NATSAuth{CA: p.CA}, "Authorization Violation")
	})
	t.Run("creds", func(t *testing.T) {
		// An operator, the system account JetStream needs, and an
		// account with JetStream whose user capoller is.
		operator := newKey(t, nkeys.CreateOperator)
		system, account, stranger := newKey(t, nkeys.CreateAccount), newKey(t, nkeys.CreateAccount), newKey(t, nkeys.CreateAccount)
		oc := jwt.NewOperatorClaims(publicKey(t, operator))
		oc.SystemAccount = publicKey(t, system)
		ac := jwt.NewAccountClaims(publicKey(t, account))
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		conf := fmt.Sprintf("%s\noperator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: { %s: %s, %s: %s }",
			tlsOn, encode(t, oc, operator), publicKey(t, system), publicKey(t, system), encode(t, jwt.NewAccountClaims(publicKey(t, system)), operator),
			publicKey(t, account), encode(t, ac, operator))
		url := testenv.SecureNATS(t, conf)
		dir := t.TempDir()
		good := testenv.WriteFile(t, dir, "good.creds", creds(t, account))
		unknown := testenv.WriteFile(t, dir, "unknown.creds", creds(t, stranger)) // a user of an account the operator did not sign
		wantNATS(t, url, "the creds", publisher.NATSAuth{CA: p.CA, Creds: good}, "")
		wantNATS(t, url, "creds of an unknown account", publisher.NATSAuth{CA: p.CA, Creds: unknown}, "Authorization Violation", "SU")
		wantNATS(t, url, "no creds", publisher.NATSAuth{CA: p.CA}, "Authorization Violation")
	})
}

func newUser(t *testing.T) nkeys.KeyPair { return newKey(t, nkeys.CreateUser) }

func newKey(t *testing.T, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func publicKey(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func encode(t *testing.T, c jwt.Claims, signer nkeys.KeyPair) string {
	t.Helper()
	s, err := c.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// creds returns a creds file of a new user of account, as nsc writes one.
func creds(t *testing.T, account nkeys.KeyPair) string {
	t.Helper()
	user := newUser(t)
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	out, err := jwt.FormatUserConfig(encode(t, jwt.NewUserClaims(publicKey(t, user)), account), seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TLS to NATS: the server's certificate is checked against nats-ca (the
// system's CAs do not know a private CA), and a server that verifies
// clients takes the one nats-cert and nats-key name.
func TestNATSAuthTLS(t *testing.T) {
	p := testenv.NewPKI(t)
	url := testenv.SecureNATS(t, testenv.NATSTLS(p, false))
	wantNATS(t, url, "the CA", publisher.NATSAuth{CA: p.CA}, "")
	wantNATS(t, url, "no CA", publisher.NATSAuth{}, "certificate signed by unknown authority")
	wantNATS(t, url, "another CA", publisher.NATSAuth{CA: p.OtherCA}, "certificate signed by unknown authority")

	verifying := testenv.SecureNATS(t, testenv.NATSTLS(p, true))
	wantNATS(t, verifying, "a client certificate", publisher.NATSAuth{CA: p.CA, Cert: p.ClientCert, Key: p.ClientKey}, "")
	// With TLS 1.3 the client may see the server's alert, or only the
	// connection it closed.
	wantNATS(t, verifying, "no client certificate", publisher.NATSAuth{CA: p.CA}, "certificate required | connection closed by remote after TLS handshake", "PRIVATE KEY")
}

// A token or password file rotated (a Secret updated) is read again at the
// next connection: after the server changes its authorization and drops
// the clients it no longer admits, they reconnect with the new secret.
func TestNATSAuthFilesAreReadAgainOnReconnect(t *testing.T) {
	for _, c := range []struct {
		name        string
		auth        func(secret string) *server.Options
		file        string
		settingFile func(a *publisher.NATSAuth, file string)
	}{
		{"token", func(secret string) *server.Options { return &server.Options{Authorization: secret} }, "token",
			func(a *publisher.NATSAuth, file string) { a.TokenFile = file }},
		{"password", func(secret string) *server.Options { return &server.Options{Username: "alice", Password: secret} }, "password",
			func(a *publisher.NATSAuth, file string) { a.User, a.PasswordFile = "alice", file }},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := c.auth("old-S3cret")
			opts.Host, opts.Port = "127.0.0.1", -1
			srv := testenv.RunNATSServer(t, opts)
			file := testenv.WriteFile(t, t.TempDir(), c.file, "old-S3cret\n")
			var a publisher.NATSAuth
			c.settingFile(&a, file)
			nc, err := publisher.Dial(publisher.DialOptions{URL: "nats://" + srv.Addr().String(), Auth: a,
				Options: []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			testenv.WriteFile(t, filepath.Dir(file), c.file, "new-S3cret\n")
			reload := c.auth("new-S3cret")
			reload.Host, reload.Port, reload.NoLog, reload.NoSigs = opts.Host, srv.Addr().(*net.TCPAddr).Port, true, true
			if err := srv.ReloadOptions(reload); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 20*time.Second, "a reconnect with the new secret", func() error {
				if nc.Stats().Reconnects == 0 {
					return fmt.Errorf("no reconnect yet (%s)", nc.Status())
				}
				return nc.FlushTimeout(time.Second)
			})
		})
	}
}

// While no server can be reached, Dial's connection says why: in the log,
// with the URL redacted, and in the error of a call Explain is given; once
// it is closed, Closed is closed and Err says so.
func TestDialTellsWhyNATSIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nobody listens there now
	core, logs := observer.New(zap.InfoLevel)
	nc, err := publisher.Dial(publisher.DialOptions{URL: "nats://alice:pw-S3cret@" + addr, Logger: zap.New(core),
		Options: []nats.Option{nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Err() != nil {
		t.Errorf("Err of an open connection: %v", nc.Err())
	}
	testenv.WaitFor(t, 10*time.Second, "a failed attempt logged", func() error {
		if logs.FilterMessage("NATS is not reachable; retrying").Len() == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	entry := logs.FilterMessage("NATS is not reachable; retrying").All()[0]
	cause, _ := entry.ContextMap()["cause"].(string)
	if f := entry.ContextMap(); f["nats"] != "nats://REDACTED@"+addr || cause == "" {
		t.Errorf("logged %v", f)
	}
	if err := nc.Explain(errors.New("publish failed")); err.Error() != "NATS is not reachable: "+cause+" (publish failed)" {
		t.Errorf("Explain: %v; want the cause logged, %q", err, cause)
	}
	if nc.Explain(nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), "S3cret") {
			t.Errorf("the log shows the password: %s %v", e.Message, e.ContextMap())
		}
	}
	nc.Close()
	select {
	case <-nc.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("Closed is still open after Close")
	}
	if !errors.As(nc.Err(), new(*publisher.ClosedError)) {
		t.Errorf("Err after Close: %v", nc.Err())
	}
}

// TestDialNamesTheDialsCause: a server that cannot be reached fails Dial
// with the dial's own cause first (a refused connection), where nats.Connect
// says only that no server was available.
func TestDialNamesTheDialsCause(t *testing.T) {
	addr := testenv.ClosedAddr(t)
	_, err := publisher.Dial(publisher.DialOptions{URL: "nats://user:hunter2@" + addr, Name: "capoller test"})
	if err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
	want := "connect to NATS at nats://REDACTED@" + addr + ": dial tcp " + addr + ": connect: connection refused"
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Dial: %v\nwant it to start %q", err, want)
	}
}

// TestDialEndsOnATLSFailure: a client that retries forever still stops at
// once on a server certificate it does not trust, naming the cause, where
// it retried without end.
func TestDialEndsOnATLSFailure(t *testing.T) {
	p := testenv.NewPKI(t)
	url := testenv.SecureNATS(t, testenv.NATSTLS(p, false))
	nc, err := publisher.Dial(publisher.DialOptions{URL: strings.Replace(url, "nats://", "tls://", 1), Name: "capoller test",
		Options: []nats.Option{nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-nc.Closed():
	case <-time.After(15 * time.Second):
		t.Fatal("the connection still retries a certificate it does not trust")
	}
	if err := nc.Err(); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("Err: %v; want the TLS failure", err)
	}
}
