package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// beMainEnv makes this test binary act as capoller itself: the bench
// starts "capoller run" as a child process with os.Executable().
const beMainEnv = "CAPOLLER_TEST_BE_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(beMainEnv) == "1" {
		os.Exit(process(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "capoller.yaml")
	if err := os.WriteFile(file, []byte("interval: 10s\nregions: [cn-beijing]\nstream: FROMFILE\nsubject-prefix: fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CAPOLLER_STREAM": "FROMENV", "CAPOLLER_SUBJECT_PREFIX": "fromenv"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg, err := loadConfig(fs, []string{"--config", file, "--subject-prefix", "fromflag"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Interval != 10*time.Second || cfg.Regions[0] != "cn-beijing" {
		t.Errorf("file values lost: %+v", cfg)
	}
	if cfg.Stream != "FROMENV" {
		t.Errorf("stream = %q: the environment should override the file", cfg.Stream)
	}
	if cfg.SubjectPrefix != "fromflag" {
		t.Errorf("subject prefix = %q: a flag should override the environment", cfg.SubjectPrefix)
	}
	if cfg.PageSize != 50 || cfg.Checkpoint != "redis" {
		t.Errorf("defaults lost: %+v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(unknown, []byte("intervall: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sources", "ecs,ecs-results"}, "two views of the same records"},
		{[]string{"--sources", "rds"}, "want ecs, ecs-results or swas"},
		{[]string{"--interval", "-1s"}, "must be positive"},
		{[]string{"--interval", "soon"}, "invalid duration"},
		{[]string{"--initial", "flood"}, "unknown initial policy"},
		{[]string{"--page-size", "100"}, "want 1..50"},
		{[]string{"--checkpoint", "etcd"}, "want redis or natskv"},
		{[]string{"--endpoint", "ftp://x"}, "want an http(s) URL"},
		{[]string{"--subject-prefix", "a.*"}, "subject prefix"},
		{[]string{"--config", unknown}, "intervall"},
	} {
		_, err := loadConfig(flag.NewFlagSet("t", flag.ContinueOnError), tc.args, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	var stderr bytes.Buffer
	if code := cli(t.Context(), []string{"run", "--sources", "ecs,ecs-results"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "configuration") {
		t.Errorf("run with a bad configuration: exit %d, stderr %q", code, stderr.String())
	}
}

func TestRunPublishesAndStopsCleanly(t *testing.T) {
	sim, simURL := startEmulator(t)

	stream := testenv.Name("CAPOLLER_RUN")
	natsURL := testenv.NATSURL(t)
	_, js := testenv.NATS(t, natsURL, stream)
	_, prefix := testenv.Redis(t)
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, []string{"run", "--endpoint", simURL, "--redis-url", testenv.RedisURL(t), "--key-prefix", prefix,
			"--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream), "--interval", "100ms", "--initial", "emit"}, io.Discard, &stderr)
	}()
	// Wait for the baseline, then run a command.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "capoller running") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	invokeID := runOnEmulator(t, simURL, ecsInstance(sim), "echo hi; exit 4")
	var final publisher.Event
	for time.Now().Before(deadline.Add(10 * time.Second)) {
		s, err := js.Stream(t.Context(), stream)
		if err == nil {
			if msg, err := s.GetLastMsgForSubject(t.Context(), strings.ToLower(stream)+".ecs.cn-hangzhou.instance.failed.>"); err == nil {
				_ = json.Unmarshal(msg.Data, &final)
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if final.Data.InvokeID != invokeID || final.Data.ExitCode == nil || *final.Data.ExitCode != 4 {
		t.Fatalf("no failed event for %s; last: %+v\nlogs:\n%s", invokeID, final, stderr.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d after a signal; logs:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop after its context ended")
	}
	if strings.Contains(stderr.String(), "run-secret") {
		t.Error("the logs carry the access key secret")
	}
}

func TestDemoResumesWithoutRepeating(t *testing.T) {
	dir := t.TempDir()
	args := []string{"demo", "--duration", "3s", "--data-dir", dir, "--print", "json", "--interval", "200ms", "--every", "250ms"}
	first := demoEvents(t, args)
	if len(first) == 0 {
		t.Fatal("the first demo run printed no event")
	}
	second := demoEvents(t, args)
	if len(second) == 0 {
		t.Fatal("the second demo run printed no event")
	}
	last := map[string]string{}
	for _, ev := range first {
		last[ev.Data.InvokeID+"/"+ev.Data.InstanceID] = string(ev.Data.Status)
	}
	seen := map[string]bool{}
	for _, ev := range first {
		seen[ev.ID] = true
	}
	for _, ev := range second {
		if seen[ev.ID] {
			t.Errorf("the resumed run repeated event %s (%s %s -> %s)", ev.ID, ev.Subject, ev.Data.PreviousStatus, ev.Data.Status)
		}
		key := ev.Data.InvokeID + "/" + ev.Data.InstanceID
		if prev, ok := last[key]; ok && string(ev.Data.PreviousStatus) != prev {
			t.Errorf("%s: resumed with previousStatus %q, but the first run ended at %q", key, ev.Data.PreviousStatus, prev)
		}
		last[key] = string(ev.Data.Status)
	}
}

func demoEvents(t *testing.T, args []string) []publisher.Event {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := cli(t.Context(), args, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "NATS       nats://") {
		t.Errorf("the demo did not report its NATS URL:\n%s", out.String())
	}
	var evs []publisher.Event
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte("{")) {
			var ev publisher.Event
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Fatalf("bad event line %q: %v", line, err)
			}
			evs = append(evs, ev)
		}
	}
	return evs
}

func TestVersionAndUsage(t *testing.T) {
	var out bytes.Buffer
	if code := cli(t.Context(), []string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "capoller ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	if code := cli(t.Context(), []string{"bogus"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown command exited %d, want 2", code)
	}
	// Stray arguments are an error, not silently ignored (with the flags
	// after them).
	for _, args := range [][]string{{"demo", "extra", "--duration", "1s"}, {"bench", "stray"}, {"run", "x"}, {"status", "x"},
		{"replay", "x"}, {"watch", "x"}, {"notify", "--config", "n.yaml", "x"}} {
		var stderr bytes.Buffer
		if code := cli(t.Context(), args, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "unexpected arguments") {
			t.Errorf("%v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSubcommandsShareRunsNames: a subcommand that takes one of run's
// settings takes it under run's name and environment variable, with run's
// default; no subcommand spells a setting another way.
func TestSubcommandsShareRunsNames(t *testing.T) {
	run := map[string]bool{}
	for _, s := range settings() {
		run[s.name] = true
	}
	help := func(args ...string) string {
		var stdout, stderr bytes.Buffer
		if code := cli(t.Context(), append(args, "--help"), &stdout, &stderr); code != 0 {
			t.Fatalf("%v --help exited %d: %s", args, code, stderr.String())
		}
		return stdout.String() // help is output asked for: stdout
	}
	for _, tc := range []struct {
		cmd    []string
		shared []string // run's settings, read from run's variables
	}{
		{[]string{"bench"}, []string{"qps", "throttle-window", "redis-url", "nats-url", "interval", "lease-ttl"}},
		{[]string{"notify"}, []string{"nats-url", "stream", "subject-prefix", "metrics-addr", "log-format", "log-level", "nats-token", "nats-ca"}},
		{[]string{"chaos"}, []string{"qps", "interval", "lease-ttl", "checkpoint", "redis-url", "nats-url"}},
	} {
		out := help(tc.cmd...)
		for _, name := range tc.shared {
			if !run[name] || !strings.Contains(out, "\n  -"+name+" ") {
				t.Errorf("%v: no --%s (run has it: %v):\n%s", tc.cmd, name, run[name], out)
			}
		}
		for _, alias := range []string{"quota", "window", "throttle", "redis", "nats"} {
			if alias == "redis" && tc.cmd[0] == "chaos" {
				continue // chaos's --redis is the embedded Redis's topology (single, cluster, sentinel); a URL there is refused, naming --redis-url
			}
			if strings.Contains(out, "\n  -"+alias+" ") {
				t.Errorf("%v: --%s spells one of run's settings another way", tc.cmd, alias)
			}
		}
	}
	for _, cmd := range []string{"bench", "notify"} {
		out := help(cmd)
		for _, v := range []string{"env CAPOLLER_NATS_URL", "nats://127.0.0.1:4222"} {
			if !strings.Contains(out, v) {
				t.Errorf("%s --help does not say %q:\n%s", cmd, v, out)
			}
		}
	}
	if out := help("bench"); !strings.Contains(out, "env CAPOLLER_REDIS_URL") || !strings.Contains(out, `(default 1m0s)`) {
		t.Errorf("bench --help: the Redis URL's variable, or the throttle window's default of a minute, is missing:\n%s", out)
	}
}
