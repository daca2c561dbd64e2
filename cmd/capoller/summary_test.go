package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/testenv"
)

// TestRunLogsAShardSummary: a healthy daemon with nothing to announce is
// not silent: each shard logs one info line per --log-summary-every with
// its cycles and API calls. Durations in the log carry their unit.
func TestRunLogsAShardSummary(t *testing.T) {
	_, simURL := startEmulator(t)
	stream := testenv.Name("CAPOLLER_SUMMARY")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream)
	_, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, []string{"run", "--endpoint", simURL, "--redis-url", testenv.RedisURL(t), "--key-prefix", prefix,
			"--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream),
			"--interval", "100ms", "--log-summary-every", "500ms"}, io.Discard, &stderr)
	}()
	lines := func(msg string) []map[string]any {
		var out []map[string]any
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == msg {
				out = append(out, l)
			}
		}
		return out
	}
	testenv.WaitFor(t, 20*time.Second, "a shard summary", func() error {
		for _, l := range lines("shard summary") {
			if l["shard"] == "default/ecs/cn-hangzhou" && l["level"] == "info" && l["cycles"].(float64) > 0 && l["api_calls"].(float64) >= l["cycles"].(float64) {
				return nil
			}
		}
		return fmt.Errorf("none yet:\n%s", stderr.String())
	})
	for _, l := range lines("shard summary") {
		if p, _ := l["period"].(string); !strings.HasSuffix(p, "s") {
			t.Errorf("summary period %v: want a duration with its unit", l["period"])
		}
	}
	running := lines("capoller running")
	if len(running) != 1 || running[0]["lease_ttl"] != "15s" || running[0]["interval"] != "100ms" {
		t.Errorf("capoller running: %v; want lease_ttl \"15s\" and interval \"100ms\"", running)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("run exited %d", code)
	}
}
