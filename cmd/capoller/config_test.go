package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

func noEnv(string) string { return "" }

// runRefused runs "capoller run" with args and wants it refused as a
// configuration error: exit code 2, with stderr naming the setting. The
// context is cancelled and NATS points at a closed port, so a configuration
// that is wrongly accepted fails fast (exit 1) instead of running.
func runRefused(t *testing.T, setting string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	base := []string{"run", "--nats-url", "nats://127.0.0.1:1", "--checkpoint", "natskv"}
	var stderr bytes.Buffer
	code := cli(ctx, append(base, args...), io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), setting) {
		t.Errorf("run %v: exit %d, stderr %q; want exit 2 naming %q", args, code, stderr.String(), setting)
	}
	return stderr.String()
}

func TestDuplicateWindowCoversTheLongestRetry(t *testing.T) {
	cfg, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DuplicateWindow != 10*time.Minute {
		t.Errorf("default duplicate window %v, want 10m", cfg.DuplicateWindow)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--duplicate-window", "5m15s"}, noEnv); err != nil {
		t.Errorf("a 5m15s window (the longest retry pause plus the default lease TTL) was refused: %v", err)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--duplicate-window", "5m", "--lease-ttl", "15s"}, noEnv); err == nil {
		t.Error("a 5m window with a 15s lease was accepted")
	}
	for _, v := range []string{"4m59s", "2m", "0s", "-10m"} {
		if msg := runRefused(t, "duplicate-window", "--duplicate-window", v); !strings.Contains(msg, "5m") {
			t.Errorf("--duplicate-window %s: %q does not say it must cover the 5m retry pause", v, msg)
		}
	}
}

// The secrets of malformed URLs never reach stderr: the configuration is
// refused with the URL redacted, not with url.Parse's error, which quotes it.
func TestRunConfigNeverShowsURLSecrets(t *testing.T) {
	for _, tc := range []struct {
		setting string
		args    []string
	}{
		{"nats-url", []string{"--nats-url", "nats://user:s3cret@host:99999999/%zz"}},
		{"nats-url", []string{"--nats-url", "nats://s3cret@host:4222/%zz"}},
		{"nats-url", []string{"--nats-url", "nats://a:4222,nats://user:s3cret@host:4222/%zz"}},
		{"nats-url", []string{"--nats-url", "nats://user:s3cret@host:99999999"}},
		{"redis-url", []string{"--checkpoint", "redis", "--redis-url", "redis://user:s3cret@host:6379/%zz"}},
		{"redis-url", []string{"--checkpoint", "redis", "--redis-url", "redis://user:s3cret@host:6379/0?dial_timeout=x&password=s3cret"}},
		{"redis-url", []string{"--checkpoint", "redis", "--redis-url", "rediss://s3cret@host:6379/%zz/x"}},
		{"endpoint", []string{"--endpoint", "http://user:s3cret@host/%zz"}},
		{"endpoint", []string{"--endpoint", "ftp://host/?AccessKeySecret=s3cret"}},
	} {
		if msg := runRefused(t, tc.setting, tc.args...); strings.Contains(msg, "s3cret") {
			t.Errorf("%v: stderr shows the secret: %q", tc.args, msg)
		}
	}
}

// The daemon logs the URLs it connects to at start-up, without their
// secrets: a NATS token (user information without a password) included.
func TestRunLogsNoURLSecrets(t *testing.T) {
	stream := testenv.Name("CAPOLLER_REDACT")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream) // removes the stream at the end
	u, err := url.Parse(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("n4ts-t0ken") // a server without authorization ignores it
	redisURL, err := url.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	redisURL.User = url.UserPassword("default", "r3dis-pass") // refused: logged as unreachable

	logs := runUntilRunning(t, []string{"--nats-url", u.String(), "--redis-url", redisURL.String(),
		"--key-prefix", testenv.Name("capoller_redact") + ":", "--stream", stream, "--subject-prefix", strings.ToLower(stream)}, nil)
	for _, secret := range []string{"n4ts-t0ken", "r3dis-pass"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs show %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "REDACTED@") {
		t.Errorf("the logs do not show the redacted NATS URL:\n%s", logs)
	}
}

// runUntilRunning starts "capoller run" with args (and an API endpoint that
// refuses connections), waits until it logs that it runs, calls running if
// set, stops it and returns its logs.
func runUntilRunning(t *testing.T, args []string, running func()) string {
	t.Helper()
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIrun")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "run-secret")
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &watchBuffer{want: "capoller running", seen: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, append([]string{"run", "--endpoint", "http://127.0.0.1:1"}, args...), io.Discard, stderr)
	}()
	select {
	case <-stderr.seen:
	case code := <-done:
		t.Fatalf("run exited %d before it ran:\n%s", code, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not start:\n%s", stderr.String())
	}
	if running != nil {
		running()
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("run exited %d after its context ended:\n%s", code, stderr.String())
	}
	return stderr.String()
}

// watchBuffer collects a writer's output and closes seen once it holds want.
type watchBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (b *watchBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if strings.Contains(b.buf.String(), b.want) {
		b.once.Do(func() { close(b.seen) })
	}
	return n, err
}

func (b *watchBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunRefusesNonsense(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		setting string
		args    []string
	}{
		{"qps", []string{"--qps", "NaN"}},
		{"qps", []string{"--qps", "+Inf"}},
		{"qps", []string{"--qps", "-Inf"}},
		{"qps", []string{"--qps", "-1"}},
		{"qps", []string{"--qps", "0"}},
		{"regions", []string{"--regions", "cn-hangzhou,cn-hangzhou"}},
		{"regions", []string{"--regions", "a,b,a"}},
		{"sources", []string{"--sources", "swas,swas"}},
		{"sources", []string{"--sources", "ecs,swas,ecs"}},
		{"sources", []string{"--sources", "ecs,ecs-results"}},
		{"stream", []string{"--stream", "a.b"}},
		{"stream", []string{"--stream", "a b"}},
		{"stream", []string{"--stream", "a*"}},
		{"stream", []string{"--stream", "a>"}},
		{"stream", []string{"--stream", "a/b"}},
		{"stream", []string{"--stream", ""}},
		{"stream", []string{"--stream", long}},
		{"bucket", []string{"--bucket", "a.b"}},
		{"bucket", []string{"--bucket", "a b"}},
		{"bucket", []string{"--bucket", "a*"}},
		{"bucket", []string{"--bucket", "a>"}},
		{"bucket", []string{"--bucket", ""}},
		{"bucket", []string{"--bucket", long[:253]}},
		{"data-dir", []string{"--data-dir", "\n"}}, // found by FuzzConfigYAML: YAML re-marshals it as ""
		{"key-prefix", []string{"--key-prefix", "a\x01:"}},
		{"data-dir", []string{"--data-dir", "a\u2028b"}},
		{"key-prefix", []string{"--key-prefix", "a\xff"}},
		{"metrics-addr", []string{"--metrics-addr", "localhost"}},
		{"metrics-addr", []string{"--metrics-addr", "localhost:"}},
		{"metrics-addr", []string{"--metrics-addr", ":99999"}},
		{"metrics-addr", []string{"--metrics-addr", ":no-such-service"}},
	} {
		runRefused(t, tc.setting, tc.args...)
	}
	for _, setting := range []string{"interval", "resync-every", "throttle-window", "api-timeout", "duplicate-window"} {
		for _, v := range []string{"-1s", "0s"} {
			runRefused(t, setting, "--"+setting, v)
		}
	}
}

func TestRunAcceptsTheLimits(t *testing.T) {
	long := strings.Repeat("a", 255)
	for _, args := range [][]string{
		{"--stream", long, "--bucket", long[:252]},
		{"--stream", "A-b_9", "--bucket", "A-b_9"},
		{"--qps", "0.5", "--metrics-addr", "127.0.0.1:0"},
		{"--metrics-addr", "[::1]:9090"},
		{"--regions", "a,b", "--sources", "ecs,swas"},
	} {
		if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), args, noEnv); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// A metrics address already in use is a configuration error, found before
// the daemon connects to anything.
func TestRunRefusesAMetricsAddressInUse(t *testing.T) {
	withTestKeys(t) // the default chain finds keys: the check under test comes first
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	runRefused(t, "metrics-addr", "--metrics-addr", ln.Addr().String())
}

// The daemon serves its metrics on the listener it opened at start-up.
func TestRunServesMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	stream := testenv.Name("CAPOLLER_METRICS")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream)
	runUntilRunning(t, []string{"--nats-url", natsURL, "--checkpoint", "natskv", "--bucket", stream, "--stream", stream,
		"--subject-prefix", strings.ToLower(stream), "--metrics-addr", addr}, func() {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("/healthz: %d %q", resp.StatusCode, body)
		}
	})
}

// An existing stream that does not capture the events' subjects stops the
// start-up, naming the stream, instead of being rewritten or retried.
func TestRunRefusesAForeignStream(t *testing.T) {
	withTestKeys(t) // the default chain finds keys: the check under test comes first
	stream := testenv.Name("CAPOLLER_FOREIGN")
	prefix := strings.ToLower(stream)
	natsURL := testenv.NATSURL(t)
	_, js := testenv.NATS(t, natsURL, stream)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{"x_" + prefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(t.Context(), []string{"run", "--nats-url", natsURL, "--checkpoint", "natskv", "--bucket", stream,
			"--stream", stream, "--subject-prefix", prefix}, io.Discard, &stderr)
	}()
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(stderr.String(), stream) || !strings.Contains(stderr.String(), "none of which covers "+prefix+".>") {
			t.Errorf("exit %d, stderr %q; want exit 1 naming the stream and the subjects it lacks", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("run kept retrying a stream it will never use:\n%s", stderr.String())
	}
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Subjects; len(got) != 1 || got[0] != "x_"+prefix+".>" {
		t.Errorf("the stream's subjects became %v", got)
	}
}

// loadYAML loads a configuration file with the given content (and args,
// and the environment env).
func loadYAML(t *testing.T, content string, env map[string]string, args ...string) (config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "capoller.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), append([]string{"--config", path}, args...), func(k string) string { return env[k] })
}

// exampleAccounts is the design's example of an account.
const exampleAccounts = `accounts:
  - name: prod
    credentials: {type: ram_role_arn, role_arn: "acs:ram::123:role/capoller", source: env}
    regions: [cn-hangzhou, cn-shanghai]
    sources: [ecs, swas]
`

func TestConfigAccountsExample(t *testing.T) {
	cfg, err := loadYAML(t, exampleAccounts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Regions != nil || cfg.Sources != nil {
		t.Errorf("with accounts, regions %v and sources %v are set; want nil", cfg.Regions, cfg.Sources)
	}
	got, err := cfg.shards()
	if err != nil {
		t.Fatal(err)
	}
	want := []shardConfig{
		{diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}, "ecs", "prod"},
		{diff.Shard{Account: "prod", Source: diff.SourceSWAS, Region: "cn-hangzhou"}, "swas", "prod"},
		{diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-shanghai"}, "ecs", "prod"},
		{diff.Shard{Account: "prod", Source: diff.SourceSWAS, Region: "cn-shanghai"}, "swas", "prod"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("shards() =\n%v\nwant\n%v", got, want)
	}
	if names := cfg.accountNames(); !slices.Equal(names, []string{"prod"}) {
		t.Errorf("accountNames() = %v", names)
	}
	c := cfg.Accounts[0].Credentials
	if c.Type != "ram_role_arn" || c.RoleARN != "acs:ram::123:role/capoller" || c.Source != "env" {
		t.Errorf("credentials = %+v", c)
	}

	// An account's sources default to ecs; ecs-results shards publish as ecs.
	cfg, err = loadYAML(t, "accounts:\n  - {name: a, credentials: {type: ecs_ram_role}, regions: [cn-beijing]}\n"+
		"  - {name: b, credentials: {type: cli_profile, profile: b}, regions: [cn-beijing], sources: [ecs-results]}\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = cfg.shards()
	want = []shardConfig{
		{diff.Shard{Account: "a", Source: diff.SourceECS, Region: "cn-beijing"}, "ecs", "a"},
		{diff.Shard{Account: "b", Source: diff.SourceECS, Region: "cn-beijing"}, "ecs-results", "b"},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("shards() = %v (%v), want %v", got, err, want)
	}
}

// Without accounts the flags make the one default account, as before.
func TestConfigWithoutAccountsIsTheDefaultAccount(t *testing.T) {
	cfg, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--regions", "cn-beijing,cn-shanghai", "--sources", "ecs-results,swas"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.shards()
	want := []shardConfig{
		{diff.Shard{Account: "default", Source: diff.SourceECS, Region: "cn-beijing"}, "ecs-results", "default"},
		{diff.Shard{Account: "default", Source: diff.SourceSWAS, Region: "cn-beijing"}, "swas", "default"},
		{diff.Shard{Account: "default", Source: diff.SourceECS, Region: "cn-shanghai"}, "ecs-results", "default"},
		{diff.Shard{Account: "default", Source: diff.SourceSWAS, Region: "cn-shanghai"}, "swas", "default"},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("shards() = %v (%v), want %v", got, err, want)
	}
	if got[0].Shard.String() != "default/ecs/cn-beijing" {
		t.Errorf("shard id %s", got[0].Shard)
	}
	if names := cfg.accountNames(); !slices.Equal(names, []string{"default"}) {
		t.Errorf("accountNames() = %v", names)
	}
	if p, err := cfg.credential("default", noEnv); p != nil || err != nil {
		t.Errorf("credential(default) = %v, %v; want nil: the SDK's default chain", p, err)
	}
	if _, err := cfg.credential("prod", noEnv); err == nil || !strings.Contains(err.Error(), `"prod"`) {
		t.Errorf("credential(prod) without accounts: %v", err)
	}
	cfg.accessKeyID, cfg.accessKeySecret = "LTAIdemo", "demo-s3cret" // as the demo sets them
	p, err := cfg.credential("default", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cc, err := p.GetCredentials(); err != nil || cc.AccessKeyId != "LTAIdemo" || cc.AccessKeySecret != "demo-s3cret" {
		t.Errorf("the demo's credential: %+v, %v", cc, err)
	}
	// A region is lower case, as Alibaba's are.
	for _, bad := range []string{"CN-HANGZHOU", "cn_hangzhou"} {
		runRefused(t, "regions", "--regions", bad)
	}
}

// With accounts, regions and sources for all of them are refused wherever
// they are set, naming both.
func TestConfigAccountsRefuseRegionsAndSourcesForAll(t *testing.T) {
	for _, tc := range []struct {
		yaml  string
		env   map[string]string
		args  []string
		where string
	}{
		{exampleAccounts, nil, []string{"--regions", "cn-beijing"}, "--regions"},
		{exampleAccounts, nil, []string{"--sources", "swas"}, "--sources"},
		{exampleAccounts, map[string]string{"CAPOLLER_REGIONS": "cn-beijing"}, nil, "CAPOLLER_REGIONS"},
		{exampleAccounts + "sources: [ecs]\n", nil, nil, "sources in "},
		{"regions: [cn-beijing]\n" + exampleAccounts, nil, nil, "regions in "},
	} {
		_, err := loadYAML(t, tc.yaml, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.where) || !strings.Contains(err.Error(), "accounts") {
			t.Errorf("%v %v: %v; want an error naming %s and the accounts", tc.env, tc.args, err, tc.where)
		}
	}
	// Other flags still apply to every account.
	cfg, err := loadYAML(t, exampleAccounts, map[string]string{"CAPOLLER_INTERVAL": "5s"}, "--page-size", "20")
	if err != nil || cfg.Interval != 5*time.Second || cfg.PageSize != 20 {
		t.Errorf("interval %v, page size %d (%v)", cfg.Interval, cfg.PageSize, err)
	}
}

// Each invalid account is refused with an error naming the account and the
// setting.
func TestConfigAccountsRefused(t *testing.T) {
	account := func(name, creds, rest string) string {
		return "accounts:\n  - name: " + name + "\n    credentials: " + creds + "\n" + rest
	}
	ak := "{type: access_key, source: env}"
	regions := "    regions: [cn-hangzhou]\n"
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{account(`"a b"`, ak, regions), []string{"accounts[0]", `name "a b"`}},
		{account(`""`, ak, regions), []string{"accounts[0]", "name: required"}},
		{account(strings.Repeat("a", 65), ak, regions), []string{"accounts[0]", "64"}},
		{account("prod", ak, regions) + "  - {name: prod, credentials: " + ak + ", regions: [cn-beijing]}\n", []string{`account "prod"`, "listed twice", "accounts[1]"}},
		{account("prod", ak, ""), []string{`account "prod"`, "regions: at least one"}},
		{account("prod", ak, "    regions: [Cn-Hangzhou]\n"), []string{`account "prod"`, `region "Cn-Hangzhou"`}},
		{account("prod", ak, "    regions: [cn-hangzhou, cn-hangzhou]\n"), []string{`account "prod"`, "regions", "twice"}},
		{account("prod", ak, regions+"    sources: [ecs, rds]\n"), []string{`account "prod"`, `source "rds"`}},
		{account("prod", ak, regions+"    sources: [swas, swas]\n"), []string{`account "prod"`, "sources", "twice"}},
		{account("prod", ak, regions+"    sources: [ecs-results, ecs]\n"), []string{`account "prod"`, "sources", "two views"}},
		{account("prod", "{source: env}", regions), []string{`account "prod"`, "credentials: type: required"}},
		{account("prod", "{type: password}", regions), []string{`account "prod"`, `credentials: type "password"`}},
		{account("prod", "{type: access_key}", regions), []string{`account "prod"`, "credentials: source: required"}},
		{account("prod", "{type: sts, source: vault}", regions), []string{`account "prod"`, `credentials: source "vault"`}},
		{account("prod", "{type: ram_role_arn, source: env}", regions), []string{`account "prod"`, "credentials: role_arn: required"}},
		{account("prod", "{type: ram_role_arn, source: env, role_arn: capoller}", regions), []string{`account "prod"`, "credentials: role_arn: want acs:ram::"}},
		{account("prod", `{type: ram_role_arn, source: env, role_arn: "acs:ram::1:role/r", policy: "{not json"}`, regions), []string{`account "prod"`, "credentials: policy"}},
		{account("prod", `{type: ram_role_arn, source: env, role_arn: "acs:ram::1:role/r", session_duration: 5m}`, regions), []string{`account "prod"`, "credentials: session_duration"}},
		{account("prod", `{type: ram_role_arn, source: env, role_arn: "acs:ram::1:role/r", role_session_name: "a b"}`, regions), []string{`account "prod"`, "credentials: role_session_name"}},
		{account("prod", `{type: ram_role_arn, source: env, role_arn: "acs:ram::1:role/r", sts_region: "CN"}`, regions), []string{`account "prod"`, "credentials: sts_region"}},
		{account("prod", "{type: access_key, source: env, access_key_id_env: 1BAD}", regions), []string{`account "prod"`, "credentials: access_key_id_env"}},
		{account("prod", "{type: access_key, source: env, access_key_secret_file: /run/s}", regions), []string{`account "prod"`, "credentials: access_key_secret_file: not used with source env"}},
		{account("prod", "{type: access_key, source: file, access_key_id_env: ID}", regions), []string{`account "prod"`, "credentials: access_key_id_env: not used with source file", "access_key_id_file: required"}},
		{account("prod", "{type: sts, source: file, access_key_id_file: /a, access_key_secret_file: /b}", regions), []string{`account "prod"`, "credentials: security_token_file: required"}},
		{account("prod", "{type: access_key, source: env, security_token_env: T}", regions), []string{`account "prod"`, "credentials: security_token_env: not used by type access_key"}},
		{account("prod", "{type: access_key, source: env, profile: p}", regions), []string{`account "prod"`, "credentials: profile: not used by type access_key"}},
		{account("prod", "{type: ecs_ram_role, source: env}", regions), []string{`account "prod"`, "credentials: source: not used by type ecs_ram_role"}},
		{account("prod", "{type: ecs_ram_role, role_name: a/b}", regions), []string{`account "prod"`, "credentials: role_name"}},
		{account("prod", "{type: cli_profile}", regions), []string{`account "prod"`, "credentials: profile: required"}},
		{account("prod", "{type: cli_profile, profile: \"a\\x01\"}", regions), []string{`account "prod"`, "credentials: profile: control"}},
		{account("prod", "{type: access_key, source: env, region: x}", regions), []string{`unknown setting "region"`}},
		{account("prod", ak, regions+"    endpoint: http://x\n"), []string{`unknown setting "endpoint"`}},
		{"accounts: {name: prod}\n", []string{"into a list of accounts"}},
		{"accounts: [prod]\n", []string{"into an account"}},
		{account("prod", "env", regions), []string{"into credentials"}},
	} {
		_, err := loadYAML(t, tc.yaml, nil)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want an error with %q", tc.yaml, err, w)
				break
			}
		}
		if err != nil && strings.Contains(err.Error(), "main.") {
			t.Errorf("%s: the error names a Go type: %v", tc.yaml, err)
		}
	}
}

// A secret written into the file is refused, naming the key and what to
// use instead, and its value is never shown: not by the refusal, not by a
// type error, not by the re-marshalled configuration.
func TestConfigAccountsRefuseInlineSecrets(t *testing.T) {
	for _, key := range []string{"access_key_id", "access_key_secret", "security_token", "sts_token", "secret", "token", "password"} {
		for _, value := range []string{"hunter2-S3cret", "[hunter2-S3cret]", "{v: hunter2-S3cret}"} {
			_, err := loadYAML(t, "accounts:\n  - name: prod\n    credentials: {type: access_key, source: env, "+key+": "+value+"}\n    regions: [cn-hangzhou]\n", nil)
			if err == nil || !strings.Contains(err.Error(), key+": secrets are never written in the configuration file") ||
				!strings.Contains(err.Error(), `account "prod"`) || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("%s: %s: %v; want it refused without its value", key, value, err)
			}
		}
	}
	for _, yaml := range []string{
		"accounts:\n  - name: prod\n    credentials: hunter2-S3cret\n",
		"accounts:\n  - name: prod\n    credentials: {type: access_key, source: env, role_arn: [hunter2-S3cret]}\n",
		"accounts:\n  - name: prod\n    credentials: {type: access_key, source: env, session_duration: hunter2-S3cret}\n",
		"accounts:\n  - name: prod\n    credentials: {type: access_key, source: env, AccessKeySecret: hunter2-S3cret}\n",
		"accounts: hunter2-S3cret\n",
	} {
		if _, err := loadYAML(t, yaml, nil); err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v; want it refused without the value", yaml, err)
		}
	}
}

// The effective configuration of accounts holds references only, and
// survives a marshal and a re-load unchanged.
func TestConfigAccountsRoundTrip(t *testing.T) {
	cfg, err := loadYAML(t, exampleAccounts+`  - name: staging
    credentials:
      type: sts
      source: env
      access_key_id_env: STAGING_ID
      access_key_secret_env: STAGING_SECRET
      security_token_env: STAGING_TOKEN
    regions: [cn-beijing]
  - name: files
    credentials: {type: access_key, source: file, access_key_id_file: /run/secrets/id, access_key_secret_file: /run/secrets/secret}
    regions: [cn-beijing]
    sources: [ecs-results, swas]
  - name: default
    credentials: {type: ram_role_arn, source: env, role_arn: "acs:ram::1:role/r", role_session_name: capoller, external_id: x, policy: '{"Version":"1"}', session_duration: 30m, sts_region: cn-hangzhou}
    regions: [cn-hangzhou]
`, map[string]string{"STAGING_SECRET": "hunter2-S3cret"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") || strings.HasPrefix(string(out), "regions:") || strings.Contains(string(out), "\nregions:") {
		t.Errorf("the effective configuration shows a secret or regions for all accounts:\n%s", out)
	}
	back, err := loadYAML(t, string(out), nil)
	if err != nil {
		t.Fatalf("re-loading\n%s\nfailed: %v", out, err)
	}
	back.Config = cfg.Config
	if !reflect.DeepEqual(cfg, back) {
		t.Errorf("re-loading changed the configuration:\n%+v\n%+v\nmarshalled as\n%s", cfg, back, out)
	}
	shards, err := cfg.shards()
	if err != nil || len(shards) != 4+1+2+1 {
		t.Errorf("%d shards (%v)", len(shards), err)
	}
}

// shards refuses the same shard twice, in a configuration that skipped
// validation.
func TestConfigShardsRefuseDuplicates(t *testing.T) {
	cfg := config{Accounts: []accountConfig{{Name: "prod", Regions: []string{"cn-hangzhou"}, Sources: []string{"ecs", "ecs-results"}}}}
	if _, err := cfg.shards(); err == nil || !strings.Contains(err.Error(), "prod/ecs/cn-hangzhou") || !strings.Contains(err.Error(), "ecs-results") {
		t.Errorf("shards() = %v; want the shard named", err)
	}
}

// The example configuration loads as it is, and so does its commented
// accounts section once uncommented (in place of regions and sources).
func TestConfigExampleLoads(t *testing.T) {
	const example = "../../deploy/capoller.example.yaml"
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", example}, noEnv); err != nil {
		t.Fatalf("%s: %v", example, err)
	}
	raw, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	settings, accounts, ok := strings.Cut(string(raw), "# accounts:")
	if !ok {
		t.Fatalf("%s has no accounts example", example)
	}
	var b strings.Builder
	for _, line := range strings.Split(settings, "\n") {
		if !strings.HasPrefix(line, "regions:") && !strings.HasPrefix(line, "sources:") {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("accounts:\n")
	for _, line := range strings.Split(accounts, "\n") {
		b.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ") + "\n")
	}
	cfg, err := loadYAML(t, b.String(), nil)
	if err != nil {
		t.Fatalf("the accounts example of %s: %v\n%s", example, err, b.String())
	}
	if shards, err := cfg.shards(); err != nil || len(cfg.Accounts) < 5 || len(shards) < len(cfg.Accounts) {
		t.Errorf("the accounts example: %d accounts, %d shards (%v)", len(cfg.Accounts), len(shards), err)
	}
}

// TestLeaseTTLMustFitTheDuplicateWindow: the next owner re-publishes a
// dead replica's uncommitted batch once its lease expired, so a lease
// longer than the duplicate window allows would store it twice.
func TestLeaseTTLMustFitTheDuplicateWindow(t *testing.T) {
	_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--lease-ttl", "1h"}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "duplicate-window") || !strings.Contains(err.Error(), "lease-ttl") {
		t.Fatalf("--lease-ttl 1h with the default 10m duplicate window: %v", err)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--lease-ttl", "1h", "--duplicate-window", "70m"}, func(string) string { return "" }); err != nil {
		t.Fatalf("a window covering the lease: %v", err)
	}
}

// TestRunRefusesScaleOutNonsense: the settings of a group are checked
// before anything connects, each refusal names its setting, and none
// echoes a secret given with it.
func TestRunRefusesScaleOutNonsense(t *testing.T) {
	for _, c := range []struct {
		setting string
		args    []string
	}{
		{"lease-ttl", []string{"--lease-ttl", "1s"}},
		{"lease-ttl", []string{"--lease-ttl", "-15s"}},
		{"stream-replicas", []string{"--stream-replicas", "0"}},
		{"stream-replicas", []string{"--stream-replicas", "7"}},
		{"replica-id", []string{"--replica-id", "web 1"}},
		{"replica-id", []string{"--replica-id", strings.Repeat("r", 129)}},
		{"replica-id", []string{"--replica-id", "r1/../../x"}},
		{"duplicate-window", []string{"--lease-ttl", "10m"}},
		{"key-prefix", []string{"--checkpoint", "redis", "--redis-url", "redis://127.0.0.1:1/0", "--key-prefix", "cap{x:"}},
		{"redis-url", []string{"--checkpoint", "redis", "--redis-url", "redis+cluster://u:hunter2secret@"}},
		{"redis-url", []string{"--checkpoint", "redis", "--redis-url", "redis+sentinel://u:hunter2secret@h1:26379,h2:26379"}},
		{"redis-url", []string{"--checkpoint", "redis", "--redis-url", "redis://u:hunter2secret@h1:6379,h2:6379/0"}},
	} {
		msg := runRefused(t, c.setting, c.args...)
		if strings.Contains(msg, "hunter2secret") {
			t.Errorf("%v: the refusal shows the password: %s", c.args, msg)
		}
	}
}

// History limits: 0 is no limit (the stores' negative), a negative one is
// refused.
func TestConfigHistoryLimits(t *testing.T) {
	cfg, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--history-max-age", "0", "--history-max-count", "500"}, func(string) string { return "" })
	if err != nil || historyLimit(cfg.HistoryMaxAge) != -1 || historyLimit(cfg.HistoryMaxCount) != 500 {
		t.Fatalf("limits %v %d (%v)", cfg.HistoryMaxAge, cfg.HistoryMaxCount, err)
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--history-max-count", "-1"}, func(string) string { return "" }); err == nil ||
		!strings.Contains(err.Error(), "history-max-count") {
		t.Fatalf("a negative count: %v", err)
	}
}

// The replica wait: on by default, at most a tenth of lease-ttl, 0 off
// (the store's negative), and a negative or sub-millisecond one refused
// with the setting named.
func TestConfigRedisReplicaWait(t *testing.T) {
	load := func(args ...string) (config, error) {
		return loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), args, func(string) string { return "" })
	}
	for _, tc := range []struct {
		args        []string
		wait, grace time.Duration
	}{
		{nil, time.Second, 15 * time.Second},
		{[]string{"--lease-ttl", "3s"}, 300 * time.Millisecond, 15 * time.Second},
		{[]string{"--redis-replica-wait", "0", "--redis-replica-grace", "0"}, -1, -1},
		{[]string{"--redis-replica-wait", "200ms", "--redis-replica-grace", "2s"}, 200 * time.Millisecond, 2 * time.Second},
	} {
		cfg, err := load(tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if wait, grace := redisReplicaWait(cfg); wait != tc.wait || grace != tc.grace {
			t.Errorf("%v: wait %v, grace %v; want %v, %v", tc.args, wait, grace, tc.wait, tc.grace)
		}
	}
	for _, args := range [][]string{{"--redis-replica-wait", "-1s"}, {"--redis-replica-grace", "-1s"}, {"--redis-replica-wait", "500us"}} {
		if _, err := load(args...); err == nil || !strings.Contains(err.Error(), args[0][2:]) {
			t.Errorf("%v: %v, want an error naming %s", args, err, args[0][2:])
		}
	}
}

// --help shows each setting's default and its environment variable.
func TestHelpShowsDefaultsAndEnvironment(t *testing.T) {
	var stdout bytes.Buffer
	if code := cli(t.Context(), []string{"run", "-h"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("run -h exited %d", code)
	}
	for _, want := range []string{"(default 15s, env CAPOLLER_LEASE_TTL)", "(default cn-hangzhou, env CAPOLLER_REGIONS)",
		"(default 50, env CAPOLLER_PAGE_SIZE)", "(default redis, env CAPOLLER_CHECKPOINT)", "(env CAPOLLER_ENDPOINT)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("run -h does not say %q:\n%s", want, stdout.String())
		}
	}
}
