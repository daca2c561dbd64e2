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

// /readyz answers whether the daemon reaches Redis and NATS and has a
// recent successful cycle for each shard it owns: it turns unready when
// Redis, then NATS, goes away (behind a proxy the test cuts), and ready
// again when each returns.
func TestReadyzFollowsRedisAndNATS(t *testing.T) {
	_, simURL := startEmulator(t)
	stream := testenv.Name("CAPOLLER_READY")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream)
	_, prefix := testenv.Redis(t)
	redisProxy, natsProxy := newNATSProxy(t, testenv.RedisURL(t)), newNATSProxy(t, natsURL)
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, []string{"run", "--endpoint", simURL, "--redis-url", "redis://" + redisProxy.addr() + "/0", "--key-prefix", prefix,
			"--nats-url", natsProxy.url(), "--stream", stream, "--subject-prefix", strings.ToLower(stream), "--interval", "200ms",
			"--lease-ttl", "3s", "--metrics-addr", addr}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		<-done
	}()
	readyz := func(want int, mention string) func() error {
		return func() error {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != want || !strings.Contains(string(body), mention) {
				return fmt.Errorf("/readyz %d %q", resp.StatusCode, body)
			}
			return nil
		}
	}
	testenv.WaitFor(t, 30*time.Second, "ready", readyz(200, "ready"))
	redisProxy.down()
	testenv.WaitFor(t, 30*time.Second, "unready without Redis", readyz(503, "checkpoint store"))
	redisProxy.up(t)
	testenv.WaitFor(t, 30*time.Second, "ready with Redis back", readyz(200, "ready"))
	natsProxy.down()
	testenv.WaitFor(t, 30*time.Second, "unready without NATS", readyz(503, "NATS"))
	natsProxy.up(t)
	testenv.WaitFor(t, 30*time.Second, "ready with NATS back", readyz(200, "ready"))
	if t.Failed() {
		t.Logf("logs:\n%s", stderr.String())
	}
}
