package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/testenv"
)

// TestStartupStopsOnWhatWaitingWillNotChange: a database index Redis does
// not have, and credentials it refuses, are facts about the configuration:
// run exits 1 at once, naming the cause, where it used to say "Redis is
// not reachable yet" and wait forever. (A refused connection is waited
// for: TestStartupWaitServesHealthAndStopsCleanly.)
func TestStartupStopsOnWhatWaitingWillNotChange(t *testing.T) {
	_, simURL := startEmulator(t)
	stream := testenv.Name("CAPOLLER_FACTS")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream)
	u, err := url.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/99"
	env := []string{"ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIfacts", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=facts-secret"}
	run := func(redisURL string, extra ...string) (int, string) {
		args := append([]string{"run", "--endpoint", simURL, "--redis-url", redisURL, "--nats-url", natsURL,
			"--stream", stream, "--subject-prefix", strings.ToLower(stream)}, extra...)
		code, _, stderr := runBinary(t, 30*time.Second, env, args...)
		return code, stderr
	}
	code, stderr := run(u.String())
	if code != 1 || !strings.Contains(stderr, "DB index is out of range") || strings.Contains(stderr, "not reachable yet") {
		t.Errorf("run with database 99 exited %d; want 1 naming the index; stderr:\n%s", code, stderr)
	}
	if !testenv.RedisHasTLS(t) {
		t.Skip("redis-server was built without TLS (BUILD_TLS=yes); the CI machine's has it")
	}
	plain, _ := testenv.RedisAuthServer(t, testenv.NewPKI(t), "no")
	code, stderr = run("redis://alice:pw-wrong@"+plain+"/0", "--key-prefix", testenv.Name("facts")+":")
	if code != 1 || !strings.Contains(stderr, "WRONGPASS") || strings.Contains(stderr, "pw-wrong") {
		t.Errorf("run with a wrong password exited %d; want 1 naming the refusal, not the password; stderr:\n%s", code, stderr)
	}
}

// TestNoRawLibraryLines: status and replay against a Redis that refuses
// connections print one line, naming the cause, and none of go-redis's
// own (its pool's "redis: … pool.go:…" lines went to stderr raw).
func TestNoRawLibraryLines(t *testing.T) {
	closed := "redis://" + testenv.ClosedAddr(t) + "/0"
	for _, args := range [][]string{{"status", "--redis-url", closed}, {"replay", "--redis-url", closed}} {
		code, stdout, stderr := runBinaryEnv(t, cleanEnv(t), args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 1 || stdout != "" || len(lines) != 1 || !strings.Contains(stderr, "connection refused") || strings.Contains(stderr, "pool.go") {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s", args, code, stdout, stderr)
		}
	}
}
