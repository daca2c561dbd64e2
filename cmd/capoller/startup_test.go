package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/testenv"
)

// While start-up waits for a NATS that is not there, /healthz and
// /readyz answer from the first second, the log says why it waits
// (connection refused, not only a timeout), and a SIGTERM (the context
// ending) is a clean stop: exit 0.
func TestStartupWaitServesHealthAndStopsCleanly(t *testing.T) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIstartup") // a pair and no token: plain http is allowed
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "startup-secret")
	dead, err := harness.FreeAddr() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, []string{"run", "--nats-url", "nats://" + dead, "--metrics-addr", addr, "--endpoint", "http://127.0.0.1:1"}, io.Discard, &stderr)
	}()
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	testenv.WaitFor(t, 10*time.Second, "/healthz and /readyz while waiting", func() error {
		hc, _, err := get("/healthz")
		if err != nil {
			return err
		}
		rc, body, err := get("/readyz")
		if err != nil {
			return err
		}
		if hc != 200 || rc != 503 || !strings.Contains(body, "starting") {
			return fmt.Errorf("/healthz %d, /readyz %d %q", hc, rc, body)
		}
		return nil
	})
	testenv.WaitFor(t, 30*time.Second, "the real cause in the log", func() error {
		if !strings.Contains(stderr.String(), "connection refused") {
			return fmt.Errorf("no 'connection refused' yet")
		}
		return nil
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("stopped during the wait, run exited %d; logs:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop")
	}
}

// go-redis's own messages go through zap, once per change: no raw line
// reaches the JSON log.
func TestRedisClientMessagesAreStructured(t *testing.T) {
	var buf syncBuffer
	log, err := newLogger("json", "info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	l := &redisLogger{log: log}
	for range 3 {
		l.Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts: dial tcp %s: connect: connection refused", 5, "127.0.0.1:1")
	}
	l.Printf(t.Context(), "redis: discarding bad PubSub connection")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (a repeat is logged once):\n%s", len(lines), buf.String())
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "{") || !strings.Contains(line, `"msg":"redis client"`) {
			t.Errorf("not a structured line: %s", line)
		}
	}
	if !strings.Contains(lines[0], "dial tcp 127.0.0.1:1: connect: connection refused") {
		t.Errorf("the cause is not in the line: %s", lines[0])
	}
}
