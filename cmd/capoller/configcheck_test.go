package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// config check accepts a good file and prints it with the shards it
// makes, secrets redacted; it refuses a bad file, an unknown key and a
// credential whose variable is unset, naming what is wrong and never a
// secret's value.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `redis-url: redis://capoller:hunter2@redis.internal:6379/0
accounts:
  - name: prod
    credentials: {type: access_key, source: env, access_key_id_env: PROD_AK, access_key_secret_env: PROD_SK}
    regions: [cn-hangzhou, cn-shanghai]
    sources: [ecs, swas]
`)
	t.Setenv("PROD_AK", "LTAIcheck")
	t.Setenv("PROD_SK", "check-secret-value")
	var stdout, stderr bytes.Buffer
	if code := cli(t.Context(), []string{"config", "check", "--config", good}, &stdout, &stderr); code != 0 {
		t.Fatalf("a good file: exit %d, %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"# 4 shards", "prod/swas/cn-shanghai", "redis://REDACTED@redis.internal:6379/0", "access_key_secret_env: PROD_SK"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check does not show %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"hunter2", "check-secret-value", "LTAIcheck"} {
		if strings.Contains(out+stderr.String(), secret) {
			t.Errorf("config check shows the secret %q", secret)
		}
	}

	t.Setenv("PROD_SK", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", good}, "PROD_SK is empty or unset"},
		{[]string{"--config", write("unknown.yaml", "regionz: [cn-hangzhou]\n")}, `unknown setting "regionz"`},
		{[]string{"--config", write("dup.yaml", "regions: [cn-hangzhou, cn-hangzhou]\n")}, "cn-hangzhou"},
		{[]string{"--lease-ttl", "1s"}, "lease-ttl"},
	} {
		var stderr bytes.Buffer
		if code := cli(t.Context(), append([]string{"config", "check"}, c.args...), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
	if code := cli(t.Context(), []string{"config"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("config without check exited %d", code)
	}
}

// The profiler is opt-in, on its own address, and a bare port binds to
// localhost; /metrics' address does not serve it.
func TestProfilerIsOptInAndLocal(t *testing.T) {
	ln, err := listenPprof(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); host != "127.0.0.1" {
		t.Errorf("a bare port bound to %s, want localhost", ln.Addr())
	}
	if ln, err := listenPprof(""); ln != nil || err != nil {
		t.Errorf("no address served the profiler: %v %v", ln, err)
	}
	rec := httptest.NewRecorder()
	opsMux(prometheus.NewRegistry(), func() error { return nil }, func(context.Context) error { return nil }).ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
	if rec.Code != 404 {
		t.Errorf("the metrics address serves the profiler: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	pprofMux().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
	if rec.Code != 200 {
		t.Errorf("the profiler's address answered %d", rec.Code)
	}
}

// An http:// endpoint with STS credentials would send the security token
// in the clear: refused unless --insecure-endpoint says so.
func TestPlainHTTPWithSTSNeedsInsecureEndpoint(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sts.yaml")
	if err := os.WriteFile(file, []byte(`endpoint: http://127.0.0.1:8080
accounts:
  - name: prod
    credentials: {type: sts, source: env}
    regions: [cn-hangzhou]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", file}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "--insecure-endpoint") {
		t.Fatalf("http with STS: %v", err)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", file, "--insecure-endpoint"}, func(string) string { return "" }); err != nil {
		t.Fatalf("with --insecure-endpoint: %v", err)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", file}, func(k string) string {
		if k == "CAPOLLER_INSECURE_ENDPOINT" {
			return "true"
		}
		return ""
	}); err != nil {
		t.Fatalf("with CAPOLLER_INSECURE_ENDPOINT=true: %v", err)
	}

	// Without accounts, the SDK's default chain signs: an access key pair
	// in the environment wins and sends no token; anything else may be
	// STS (a token in the environment, a profile, the instance's role).
	for _, c := range []struct {
		env    map[string]string
		refuse bool
	}{
		{map[string]string{"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIx", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}, false},
		{map[string]string{"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIx", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s", "ALIBABA_CLOUD_SECURITY_TOKEN": "tok-S3cret"}, true},
		{map[string]string{}, true},
		{map[string]string{"CAPOLLER_INSECURE_ENDPOINT": "1"}, false},
	} {
		_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--endpoint", "http://127.0.0.1:8080"}, func(k string) string { return c.env[k] })
		if refused := err != nil && strings.Contains(err.Error(), "default credential chain") && strings.Contains(err.Error(), "--insecure-endpoint"); refused != c.refuse || (err != nil && !refused) {
			t.Errorf("default chain, environment %v: %v; want refused %v", c.env, err, c.refuse)
		}
		if err != nil && strings.Contains(err.Error(), "tok-S3cret") {
			t.Errorf("the error shows the token: %v", err)
		}
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--endpoint", "https://ecs.aliyuncs.com"}, func(string) string { return "" }); err != nil {
		t.Errorf("https with the default chain: %v", err)
	}
}
