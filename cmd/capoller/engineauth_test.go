package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/testenv"
)

// capoller status, run, replay and watch dial NATS with the same settings:
// status reaches a server that takes a token over TLS (and says the
// bucket is missing: it got as far as JetStream), from the environment as
// an operator would set it, and a wrong token is refused with a message
// that holds neither token.
func TestNATSAuthStatusCommand(t *testing.T) {
	p := testenv.NewPKI(t)
	url := testenv.SecureNATS(t, testenv.NATSTLS(p, true)+"\nauthorization { token: \"tok-S3cret-right\" }")
	args := []string{"status", "--checkpoint", "natskv", "--bucket", "CAPOLLER_AUTH_TEST", "--nats-url", url,
		"--nats-ca", p.CA, "--nats-cert", p.ClientCert, "--nats-key", p.ClientKey}
	for _, c := range []struct {
		token, want string
	}{
		{"tok-S3cret-right", "CAPOLLER_AUTH_TEST"},
		{"tok-S3cret-wrong", "Authorization Violation"},
	} {
		t.Setenv("CAPOLLER_NATS_TOKEN", c.token)
		var stdout, stderr bytes.Buffer
		code := cli(t.Context(), args, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), c.want) || strings.Contains(stderr.String(), "connect to NATS") != (c.want != "CAPOLLER_AUTH_TEST") {
			t.Errorf("token %s: exit %d, %q; want 1 and %q", c.token, code, stderr.String(), c.want)
		}
		if strings.Contains(stdout.String()+stderr.String(), "tok-S3cret") {
			t.Errorf("status shows a token: %s%s", stdout.String(), stderr.String())
		}
	}
}

// notify takes the NATS settings of run, as flags and from the
// environment, and checks them the same way.
func TestNATSAuthNotifyFlags(t *testing.T) {
	p := testenv.NewPKI(t)
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--nats-cert", p.ClientCert}, nil, "nats-cert: needs nats-key"},
		{nil, map[string]string{"CAPOLLER_NATS_KEY": p.ClientKey}, "nats-key: needs nats-cert"},
		{[]string{"--nats-ca", filepath.Join(p.Dir, "missing.pem")}, nil, "nats-ca " + filepath.Join(p.Dir, "missing.pem") + ": no such file or directory"},
		{[]string{"--nats-token", "tok-S3cret", "--nats-user", "alice"}, map[string]string{"CAPOLLER_NATS_PASSWORD": "pw-S3cret"}, "nats-token and nats-user: choose one"},
	} {
		t.Run(c.want, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			args := append([]string{"notify", "--config", filepath.Join(p.Dir, "notify.yaml")}, c.args...)
			if code := cli(t.Context(), args, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) || strings.Contains(stderr.String(), "S3cret") {
				t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, stderr.String(), c.want)
			}
		})
	}
}

// The settings are checked before anything connects: each mistake is
// named, and no error holds a secret.
func TestConfigEngineAuthValidation(t *testing.T) {
	p := testenv.NewPKI(t)
	dir := t.TempDir()
	notPEM := testenv.WriteFile(t, dir, "not.pem", "hello")
	badCreds := testenv.WriteFile(t, dir, "bad.creds", "-----BEGIN NATS USER JWT-----\nnot-a-jwt\n------END NATS USER JWT------\n")
	badSeed := testenv.WriteFile(t, dir, "bad.nk", "SUnotaseedS3cret\n")
	emptyFile := testenv.WriteFile(t, dir, "empty", "\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-cert", p.ClientCert}, "nats-cert: needs nats-key"},
		{[]string{"--nats-key", p.ClientKey}, "nats-key: needs nats-cert"},
		{[]string{"--nats-cert", p.ClientCert, "--nats-key", p.ServerKey}, "private key does not match public key"},
		{[]string{"--nats-ca", notPEM}, "nats-ca " + notPEM + ": no PEM certificate in it"},
		{[]string{"--nats-ca", filepath.Join(dir, "missing")}, "no such file or directory"},
		{[]string{"--nats-creds", badCreds}, "nats-creds " + badCreds + ": no user JWT in it"},
		{[]string{"--nats-nkey-seed", badSeed}, "nats-nkey-seed " + badSeed},
		{[]string{"--nats-creds", badCreds, "--nats-nkey-seed", badSeed}, "nats-creds and nats-nkey-seed: choose one way"},
		{[]string{"--nats-token", "tok-S3cret", "--nats-user", "alice", "--nats-password", "pw-S3cret"}, "nats-token and nats-user: choose one way"},
		{[]string{"--nats-token", "tok-S3cret", "--nats-token-file", emptyFile}, "nats-token and nats-token-file: set one"},
		{[]string{"--nats-token-file", emptyFile}, "nats-token-file " + emptyFile + ": empty"},
		{[]string{"--nats-password", "pw-S3cret"}, "nats-password: needs nats-user"},
		{[]string{"--nats-user", "alice"}, "nats-user: needs nats-password"},
		{[]string{"--nats-url", "nats://bob:pw-S3cret@127.0.0.1:4222", "--nats-user", "alice", "--nats-password", "pw-S3cret"}, "nats-user and user information in nats-url"},
		{[]string{"--nats-url", "embedded", "--nats-token", "tok-S3cret"}, "not with nats-url embedded"},
		{[]string{"--redis-ca", p.CA}, "only with TLS, and redis-url is redis://: use rediss://"},
		{[]string{"--redis-url", "redis+cluster://127.0.0.1:7000", "--redis-cert", p.ClientCert, "--redis-key", p.ClientKey}, "redis-url is redis+cluster://"},
		{[]string{"--redis-url", "rediss://127.0.0.1:6380/0", "--redis-cert", p.ClientCert}, "redis-cert: needs redis-key"},
		{[]string{"--redis-url", "rediss+sentinel://127.0.0.1:26379/m", "--redis-ca", notPEM}, "redis-ca " + notPEM + ": no PEM certificate in it"},
		{[]string{"--redis-username", "alice"}, "redis-username: needs a password"},
		{[]string{"--redis-password", "pw-S3cret", "--redis-password-file", emptyFile}, "redis-password and redis-password-file: set one"},
	} {
		_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), c.args, noEnv)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v; want %q", c.args, err, c.want)
		} else if strings.Contains(err.Error(), "S3cret") || strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%v: the error shows a secret: %v", c.args, err)
		}
	}
	for _, args := range [][]string{
		{"--nats-ca", p.CA, "--nats-cert", p.ClientCert, "--nats-key", p.ClientKey, "--nats-user", "alice", "--nats-password", "x"},
		{"--nats-url", "tls://127.0.0.1:4222", "--nats-token-file", testenv.WriteFile(t, dir, "token", "tok\n")},
		{"--redis-url", "rediss+cluster://127.0.0.1:7000,127.0.0.1:7001", "--redis-ca", p.CA, "--redis-cert", p.ClientCert, "--redis-key", p.ClientKey, "--redis-username", "alice", "--redis-password", "x"},
		{"--redis-url", "redis://:urlpassword@127.0.0.1:6379/0", "--redis-username", "alice"},
	} {
		if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), args, noEnv); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// config check names the files but shows no secret set inline: the
// token, the passwords.
func TestConfigCheckRedactsEngineSecrets(t *testing.T) {
	withTestKeys(t) // the default chain finds keys: the check under test comes first
	p := testenv.NewPKI(t)
	t.Setenv("CAPOLLER_NATS_PASSWORD", "pw-S3cret-nats")
	t.Setenv("CAPOLLER_REDIS_PASSWORD", "pw-S3cret-redis")
	var out, errOut bytes.Buffer
	code := cli(t.Context(), []string{"config", "check", "--nats-user", "alice", "--nats-ca", p.CA,
		"--redis-url", "rediss://127.0.0.1:6380/0", "--redis-username", "bob", "--redis-ca", p.CA}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"nats-user: alice", "nats-password: REDACTED", "redis-password: REDACTED", "redis-username: bob", "nats-ca: " + p.CA, "nats-token: \"\""} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("config check does not show %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String()+errOut.String(), "S3cret") {
		t.Errorf("config check shows a secret:\n%s", out.String())
	}
}

// capoller status reads a Redis that takes alice over TLS, the password
// from CAPOLLER_REDIS_PASSWORD; a wrong one fails and is not shown.
func TestRedisAuthStatusCommand(t *testing.T) {
	if !testenv.RedisHasTLS(t) {
		t.Skip("redis-server was built without TLS (BUILD_TLS=yes); the CI machine's has it")
	}
	p := testenv.NewPKI(t)
	_, tlsAddr := testenv.RedisAuthServer(t, p, "yes")
	args := []string{"status", "--redis-url", "rediss://" + tlsAddr + "/0", "--redis-username", "alice",
		"--redis-ca", p.CA, "--redis-cert", p.ClientCert, "--redis-key", p.ClientKey, "--key-prefix", testenv.Name("capoller_auth") + ":"}
	for _, c := range []struct {
		password string
		code     int
		want     string
	}{
		{"pw-S3cret-right", 0, "cn-hangzhou"},
		{"pw-S3cret-wrong", 1, "WRONGPASS"},
	} {
		t.Setenv("CAPOLLER_REDIS_PASSWORD", c.password)
		var out, errOut bytes.Buffer
		code := cli(t.Context(), args, &out, &errOut)
		if code != c.code || !strings.Contains(out.String()+errOut.String(), c.want) {
			t.Errorf("password %s: exit %d, %q %q; want %d and %q", c.password, code, out.String(), errOut.String(), c.code, c.want)
		}
		if strings.Contains(out.String()+errOut.String(), "S3cret") {
			t.Errorf("status shows the password: %s%s", out.String(), errOut.String())
		}
	}
}

// capoller run connects with the settings too: with the right token it
// sets up its stream over TLS; with a wrong one it says why it waits,
// without the token.
func TestNATSAuthRunCommand(t *testing.T) {
	p := testenv.NewPKI(t)
	url := testenv.SecureNATS(t, testenv.NATSTLS(p, true)+"\nauthorization { token: \"tok-S3cret-right\" }")
	for _, c := range []struct {
		token, want string
		exits       bool // on its own, non-zero: the client gave up on the refusing server
	}{
		{"tok-S3cret-right", `"msg":"stream created"`, false},
		{"tok-S3cret-wrong", "the NATS connection was closed for good (nats: Authorization Violation)", true},
	} {
		t.Run(c.token, func(t *testing.T) {
			t.Setenv("CAPOLLER_NATS_TOKEN", c.token)
			t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIauth") // a pair and no token: plain http is allowed
			t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "auth-secret")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var stderr syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- cli(ctx, []string{"run", "--nats-url", url, "--nats-ca", p.CA, "--nats-cert", p.ClientCert, "--nats-key", p.ClientKey,
					"--checkpoint", "natskv", "--endpoint", "http://127.0.0.1:1"}, io.Discard, &stderr)
			}()
			if c.exits {
				select {
				case code := <-done:
					if code != 1 || !strings.Contains(stderr.String(), c.want) {
						t.Errorf("run exited %d, want 1 and %q:\n%s", code, c.want, stderr.String())
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("run still waits for a server that refused its credentials:\n%s", stderr.String())
				}
			} else {
				testenv.WaitFor(t, 20*time.Second, c.want+" in the log", func() error {
					select {
					case code := <-done:
						t.Fatalf("run exited %d:\n%s", code, stderr.String())
					default:
					}
					if !strings.Contains(stderr.String(), c.want) {
						return errors.New("not yet")
					}
					return nil
				})
				cancel()
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					t.Fatal("run did not stop")
				}
			}
			if strings.Contains(stderr.String(), "tok-S3cret") {
				t.Errorf("the log shows the token:\n%s", stderr.String())
			}
		})
	}
}

// capoller setup dials NATS with the same settings as run: against a
// server that takes a token over TLS, it creates the stream; a wrong token
// is refused with a message that holds neither token.
func TestNATSAuthSetupCommand(t *testing.T) {
	p := testenv.NewPKI(t)
	url := testenv.SecureNATS(t, testenv.NATSTLS(p, true)+"\nauthorization { token: \"tok-S3cret-right\" }")
	stream := testenv.Name("CAPOLLER_SETUP_AUTH")
	args := []string{"setup", "--nats-url", url, "--nats-ca", p.CA, "--nats-cert", p.ClientCert, "--nats-key", p.ClientKey,
		"--stream", stream, "--subject-prefix", strings.ToLower(stream)}
	for _, c := range []struct {
		token string
		code  int
		want  string
	}{
		{"tok-S3cret-wrong", 1, "Authorization Violation"},
		{"tok-S3cret-right", 0, "stream " + stream + " created"},
	} {
		t.Setenv("CAPOLLER_NATS_TOKEN", c.token)
		var stdout, stderr bytes.Buffer
		code := cli(t.Context(), args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stdout.String()+stderr.String(), c.want) {
			t.Errorf("token %s: exit %d, %q %q; want %d and %q", c.token, code, stdout.String(), stderr.String(), c.code, c.want)
		}
		if strings.Contains(stdout.String()+stderr.String(), "tok-S3cret") {
			t.Errorf("setup shows a token: %s%s", stdout.String(), stderr.String())
		}
	}
}
