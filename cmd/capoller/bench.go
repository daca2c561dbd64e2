package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/capoller/capoller/cmd/internal/bench"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/publisher"
)

// benchCommand is `capoller bench`: its flags, the run (package bench),
// and the report.
func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench")
	o, strategies, behaviours := benchFlags(fs)
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	var err error
	if o.Behaviours, err = bench.ParseBehaviours(*behaviours); err != nil {
		fmt.Fprintf(stderr, "capoller bench: %v\n", err)
		return 2
	}
	o.Strategies = strings.Split(*strategies, ",")
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "capoller bench: %v\n", err)
		return 2
	}
	if o.Executable, err = os.Executable(); err != nil {
		fmt.Fprintf(stderr, "capoller bench: %v\n", err)
		return 1
	}
	o.Progress = stderr
	o.PollerPublisher = func(p *publisher.NATS) poller.Publisher { return pollerPublisher{p} }
	rep, err := bench.Run(ctx, *o)
	if err == nil && *jsonOut {
		err = rep.WriteJSON(stdout)
	} else if err == nil {
		rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "capoller bench: %v\n", err)
		return 1
	}
	return 0
}

// benchFlags defines the bench's flags on fs; the strategies and the
// behaviours are parsed once fs is.
func benchFlags(fs *flag.FlagSet) (o *bench.Options, strategies, behaviours *string) {
	o = &bench.Options{}
	fs.IntVar(&o.Records, "records", 10_000, "invocations in the emulator (each on one instance: twice as many records are tracked)")
	fs.Float64Var(&o.Active, "active", 0.01, "fraction of them still running at the start")
	fs.DurationVar(&o.ActiveFor, "active-for", 10*time.Minute, "the running ones finish spread over this long")
	fs.Float64Var(&o.QPS, "qps", 18, "the daemon's --qps: API calls per second per API; the emulator's quota is a tenth above it, per --throttle-window (0: no quota, no limit)")
	fs.DurationVar(&o.Window, "throttle-window", time.Minute, "the daemon's --throttle-window and the emulator's quota window (Alibaba's is a minute)")
	fs.DurationVar(&o.Interval, "interval", 5*time.Second, "poll interval")
	fs.IntVar(&o.Cycles, "cycles", 3, "steady-state cycles to measure per strategy")
	strategies = fs.String("strategies", "full,incremental", "strategies to compare, in order")
	fs.Float64Var(&o.Arrivals, "arrivals", 2, "new invocations per second during the measurement")
	fs.Float64Var(&o.Throttle, "throttle-rate", 0, "fraction of API calls the emulator throttles on top of the quota")
	fs.Float64Var(&o.Errors, "error-rate", 0, "fraction of API calls that fail with a 5xx")
	fs.IntVar(&o.Burst, "burst", 20_000, "invocations changing at once in the throughput phase (0: skip it)")
	defaults := defaultConfig()
	fs.StringVar(&o.RedisURL, "redis-url", envOr(envName("redis-url"), defaults.RedisURL), "Redis, one server (env "+envName("redis-url")+")")
	fs.StringVar(&o.NATSURL, "nats-url", envOr(envName("nats-url"), defaults.NATSURL), `NATS with JetStream, or "embedded" (env `+envName("nats-url")+")")
	fs.IntVar(&o.Instances, "instances", 500, "simulated ECS instances")
	fs.IntVar(&o.Replicas, "replicas", 0, "run a group of this many replicas sharing --shards shards instead of the strategies (0: do not)")
	fs.IntVar(&o.Shards, "shards", 60, "shards of the replica group: two accounts, ECS and SWAS, in shards/4 regions")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", 15*time.Second, "the replica group's lease TTL")
	fs.DurationVar(&o.Steady, "steady", 30*time.Second, "how long the replica group's steady state is measured")
	fs.BoolVar(&o.Tracing, "tracing", false, "export spans over OTLP/HTTP to a collector in process that discards them: the pipeline's and each strategy's daemon's")
	fs.BoolVar(&o.Hints, "hints", false, "the daemon takes the emulator's EventBridge pushes as hints: time its terminal statuses, count its API calls a minute")
	behaviours = fs.String("behaviours", "ideal", "emulator behaviours to run each strategy under: ideal, worst (unordered ties, drifting tokens, strict filters), or a JSON castest.Behaviour")
	return o, strategies, behaviours
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
