// Package testenv gives tests real servers: Redis and NATS with JetStream.
//
// Redis comes from REDIS_URL, else from a redis-server found on PATH and
// started on a free port, else — only then — from miniredis. NATS comes from
// NATS_URL, else from an embedded nats-server (a real server, in process).
// .ci/run always sets both URLs, so CI tests against the machine's servers.
//
// RedisCluster, RedisSentinel and NATSCluster start private clusters for
// one test (redis-server processes, embedded nats-server nodes), whatever
// the URLs say.
//
// Every test gets unique names (key prefixes, stream and bucket names) and
// its resources are removed when it ends, so tests never collide.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher/embedded"
)

// Name returns a name unique to this run, safe as a Redis key prefix, a
// stream or bucket name and a subject token: base_<random>.
func Name(base string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return base + "_" + hex.EncodeToString(b)
}

// Redis returns a client of a real Redis server and a unique key prefix
// ("<name>:"). Keys under the prefix are deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	return RedisAt(t, RedisURL(t))
}

// RedisAt is Redis for the server at url (from RedisURL), for a test that
// also hands the URL to a child process: without REDIS_URL, each call of
// RedisURL may start another server.
func RedisAt(t testing.TB, url string) (*redis.Client, string) {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("testenv: REDIS_URL %q: %v", url, err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: redis at %s: %v", url, err)
	}
	prefix := Name("capoller_test") + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		_ = client.Close()
	})
	return client, prefix
}

// RedisURL returns the URL of a real Redis server, starting one if needed.
func RedisURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv("REDIS_URL"); url != "" {
		return url
	}
	if path, err := exec.LookPath("redis-server"); err == nil {
		return startRedisServer(t, path)
	}
	t.Log("testenv: no REDIS_URL and no redis-server on PATH; falling back to miniredis")
	m := miniredis.RunT(t)
	return "redis://" + m.Addr()
}

func startRedisServer(t testing.TB, path string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := exec.Command(path, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			_ = conn.Close()
			return "redis://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: redis-server on %s did not start: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NATSURL returns the URL of a real NATS server with JetStream, starting an
// embedded one if NATS_URL is not set.
func NATSURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv("NATS_URL"); url != "" {
		return url
	}
	srv, err := embedded.Run(embedded.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.URL()
}

// NATS connects to a real NATS server with JetStream. The connection is
// closed, and streams and key-value buckets whose names start with one of
// the given names are deleted, when the test ends.
func NATS(t testing.TB, url string, names ...string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("testenv: connect to NATS at %s: %v", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer nc.Close()
		if !nc.IsConnected() || len(names) == 0 {
			return // the test stopped the server; nothing to clean
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		streams := js.StreamNames(ctx)
		var doomed []string
		for name := range streams.Name() {
			for _, n := range names {
				if strings.HasPrefix(name, n) || strings.HasPrefix(name, "KV_"+n) {
					doomed = append(doomed, name)
				}
			}
		}
		for _, name := range doomed {
			_ = js.DeleteStream(ctx, name)
		}
	})
	return nc, js
}

// Emulator starts the Cloud Assistant emulator on a free port of
// 127.0.0.1 and returns it and its URL; it is closed when the test ends.
func Emulator(t testing.TB, opts castest.Options) (*castest.Server, string) {
	t.Helper()
	sim, err := castest.New(opts)
	if err != nil {
		t.Fatalf("testenv: the emulator: %v", err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: start the emulator: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim, url
}

// ClosedAddr is a local address nothing listens on: a dial to it is
// refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
