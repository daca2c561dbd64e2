package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/capoller/capoller/cmd/internal/bench"
	"github.com/capoller/capoller/poller/testenv"
)

// TestBenchComparesStrategies runs a small bench end to end: an emulator,
// a child capoller per strategy (this test binary, through TestMain),
// real Redis and NATS, and the JSON report.
func TestBenchComparesStrategies(t *testing.T) {
	t.Setenv(beMainEnv, "1")
	var out bytes.Buffer
	args := []string{"bench", "--records", "600", "--active", "0.02", "--active-for", "5s", "--interval", "300ms", "--cycles", "2",
		"--qps", "0", "--throttle-window", "50ms", "--throttle-rate", "0.6", "--burst", "500", "--json",
		"--redis-url", testenv.RedisURL(t), "--nats-url", testenv.NATSURL(t)}
	if code := cli(t.Context(), args, &out, io.Discard); code != 0 {
		t.Fatalf("bench exited %d", code)
	}
	var report struct {
		Strategies []bench.StrategyReport  `json:"strategies"`
		Throughput *bench.ThroughputReport `json:"throughput"`
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if len(report.Strategies) != 2 || report.Throughput == nil {
		t.Fatalf("report: %s", out.String())
	}
	full, inc := report.Strategies[0], report.Strategies[1]
	if full.Strategy != "full" || inc.Strategy != "incremental" {
		t.Fatalf("strategies: %s, %s", full.Strategy, inc.Strategy)
	}
	// 600 invocations, 50 a page: a full listing is 12 pages.
	if full.APICallsPerCycle < 12 || inc.APICallsPerCycle >= full.APICallsPerCycle {
		t.Errorf("calls per cycle: full %.1f, incremental %.1f", full.APICallsPerCycle, inc.APICallsPerCycle)
	}
	for _, r := range report.Strategies {
		if r.PeakRSSMiB <= 0 || r.Cycles < 2 || r.RedisTripsPerCycle <= 0 || r.CPUSecondsPerCycle <= 0 {
			t.Errorf("%s: incomplete measurements %+v", r.Strategy, r)
		}
		// 600 invocations on one instance each, and the arrivals: at least
		// 1200 records; each costs tens of bytes at least, and far less
		// than a kilobyte.
		if st := r.Store; st.Records < 1200 || st.BytesPerRecord < 20 || st.BytesPerRecord > 1024 ||
			st.HistoryTransitions < 1 || st.BytesPerHistoryEntry < 20 || st.BytesPerHistoryEntry > 4096 {
			t.Errorf("%s: store sizing %+v", r.Strategy, st)
		}
		// The baseline alone is 12 calls: all 12 pass 60% throttling with
		// a chance of 1 in 60,000.
		if r.Backoffs["throttled"] == 0 || r.BackoffSeconds["throttled"] <= 0 {
			t.Errorf("%s: 60%% throttling recorded no backoff: %v, %v s", r.Strategy, r.Backoffs, r.BackoffSeconds)
		}
	}
	if report.Throughput.Transitions != 1000 || report.Throughput.PerSecond <= 0 {
		t.Errorf("throughput: %+v", report.Throughput)
	}
}

// TestBenchReplicas runs `capoller bench --replicas` small: three child
// replicas share 8 shards, one is killed, and the report holds each
// replica's calls, latencies in steady state and through the kill, and
// peak memory; the throughput phase compares with a raw publish.
func TestBenchReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts replicas as processes")
	}
	t.Setenv(beMainEnv, "1")
	var out bytes.Buffer
	args := []string{"bench", "--replicas", "3", "--shards", "8", "--interval", "500ms", "--lease-ttl", "3s", "--steady", "3s",
		"--burst", "500", "--json", "--redis-url", testenv.RedisURL(t), "--nats-url", testenv.NATSURL(t)}
	if code := cli(t.Context(), args, &out, io.Discard); code != 0 {
		t.Fatalf("bench exited %d", code)
	}
	var report struct {
		Replicas   *bench.ReplicaReport    `json:"replicas"`
		Throughput *bench.ThroughputReport `json:"throughput"`
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil || report.Replicas == nil || report.Throughput == nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	r := report.Replicas
	if r.Shards != 8 || len(r.APICallsPerMinute) != 3 || len(r.PeakRSSMiB) != 3 {
		t.Fatalf("replica report: %+v", r)
	}
	for id, n := range r.APICallsPerMinute {
		if n <= 0 || r.PeakRSSMiB[id] <= 0 {
			t.Errorf("%s: %.0f calls/min, %.0f MiB", id, n, r.PeakRSSMiB[id])
		}
	}
	if r.SteadySamples == 0 || r.SteadyP99 <= 0 || r.FailoverSamples == 0 || r.FailoverMoveSeconds <= 0 {
		t.Errorf("latencies: %+v", r)
	}
	if tp := report.Throughput; tp.RawPerSecond <= 0 || tp.Ratio <= 0 {
		t.Errorf("throughput: %+v", tp)
	}
}

// The bench's capoller run signs with the emulator's pair, whatever the
// operator's shell holds: an STS token there (ALIBABA_CLOUD_SECURITY_TOKEN,
// as the aliyun CLI's users export) made run refuse the emulator's
// http:// endpoint for the default chain, and would have sent the token.
func TestBenchRunEnvIgnoresTheShellsToken(t *testing.T) {
	env := bench.RunEnv([]string{"ALIBABA_CLOUD_SECURITY_TOKEN=tok-S3cret", "ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIshell", "HOME=/h"}, "LTAIbench", "bench-secret")
	getenv := func(k string) string {
		v := ""
		for _, kv := range env { // the last wins, as os/exec has it
			if name, value, _ := strings.Cut(kv, "="); name == k {
				v = value
			}
		}
		return v
	}
	if _, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--endpoint", "http://127.0.0.1:1"}, getenv); err != nil {
		t.Errorf("bench's run refused: %v", err)
	}
	if getenv("ALIBABA_CLOUD_SECURITY_TOKEN") != "" || getenv("ALIBABA_CLOUD_ACCESS_KEY_ID") != "LTAIbench" || getenv("HOME") != "/h" {
		t.Errorf("environment %v", env)
	}
}
