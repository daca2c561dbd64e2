package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--duplicate-window", "5m"}, noEnv); err != nil {
		t.Errorf("a 5m window (the longest retry pause) was refused: %v", err)
	}
	for _, v := range []string{"4m59s", "2m", "0s", "-10m"} {
		if msg := runRefused(t, "duplicate-window", "--duplicate-window", v); !strings.Contains(msg, "5m") {
			t.Errorf("--duplicate-window %s: %q does not say it must cover the 5m retry pause", v, msg)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		secrets []string
		want    string // "" to check only that the secrets are gone
	}{
		{"nats://mytoken@host:4222", []string{"mytoken"}, "nats://REDACTED@host:4222"},
		{"nats://user:s3cret@host:4222", []string{"user", "s3cret"}, "nats://REDACTED@host:4222"},
		{"redis://:s3cret@127.0.0.1:6379/0", []string{"s3cret"}, "redis://REDACTED@127.0.0.1:6379/0"},
		{"nats://user:s3cret@host:99999999/%zz", []string{"user", "s3cret"}, "nats://REDACTED@host:99999999/%zz"},
		{"nats://us%zzer:s3cret@host:4222", []string{"s3cret"}, "nats://REDACTED@host:4222"},
		{"nats://user:s3c@ret@host:4222", []string{"s3c", "ret@host"}, "nats://REDACTED@host:4222"},
		{"nats://user:s3c/ret@host:4222", []string{"s3c", "ret@host"}, ""},
		{"nats://user:s3cret", []string{"s3cret"}, "nats://user:REDACTED"},
		{"user:s3cret@host:4222", []string{"s3cret"}, ""},
		{"mytoken@host:4222", []string{"mytoken"}, "REDACTED@host:4222"},
		{"nats:///user:s3cret@host", []string{"s3cret"}, ""},
		{"rediss://h:6380/0?PASSWORD=s3cret&db=1", []string{"s3cret"}, "rediss://h:6380/0?PASSWORD=REDACTED&db=1"},
		{"http://h/x?Token=s3cret", []string{"s3cret"}, "http://h/x?Token=REDACTED"},
		{"http://h/?AccessKeyId=LTAIs3cret&AccessKeySecret=k3y&Signature=s1g&SecurityToken=st0k&Action=RunCommand",
			[]string{"LTAIs3cret", "k3y", "s1g", "st0k"}, "http://h/?AccessKeyId=REDACTED&AccessKeySecret=REDACTED&Signature=REDACTED&SecurityToken=REDACTED&Action=RunCommand"},
		{"http://h/?pwd=a&pass=b1&secret=c1&auth=d1&key=e1&access_key_id=f1&client-secret=g1", []string{"=a", "b1", "c1", "d1", "e1", "f1", "g1"}, ""},
		{"http://h/?password=s3c,ret&x=1", []string{"s3c", "ret"}, "http://h/?password=REDACTED&x=1"},
		{"redis://h/%zz?password=s3cret", []string{"s3cret"}, "redis://h/%zz?password=REDACTED"},
		{"nats://tok1@a:4222,nats://u:pw2@b:4222, tok3@c:4222,d:4222", []string{"tok1", "pw2", "tok3"}, "nats://REDACTED@a:4222,nats://REDACTED@b:4222,REDACTED@c:4222,d:4222"},
		{"nats://a:4222?token=t1,nats://b:4222?token=t2", []string{"t1", "t2"}, "nats://a:4222?token=REDACTED,nats://b:4222?token=REDACTED"},
		{"nats://user:pa,ss@host:4222", []string{"pa", "ss"}, ""},
		{"nats://127.0.0.1:4222", nil, "nats://127.0.0.1:4222"},
		{"unix:///tmp/redis.sock", nil, "unix:///tmp/redis.sock"},
		{"", nil, ""},
	} {
		got := redactURL(tc.raw)
		for _, s := range tc.secrets {
			if strings.Contains(got, s) {
				t.Errorf("redactURL(%q) = %q: shows %q", tc.raw, got, s)
			}
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.raw, got, tc.want)
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
