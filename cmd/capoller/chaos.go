package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/capoller/capoller/cmd/internal/chaos"
	"github.com/capoller/capoller/cmd/internal/harness"
)

// chaosCommand is `capoller chaos`: its flags, the run (package chaos),
// and the report.
func chaosCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("chaos")
	o := chaosFlags(fs)
	jsonOut := fs.Bool("json", false, "print the report as JSON instead of the summary")
	reportFile := fs.String("report", "", "also write the JSON report to this file")
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "capoller chaos: %v\n", err)
		return 2
	}
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano() % 1_000_000_000
	}
	// The harness's own Redis client (the lease watch) fails while the
	// harness restarts redis-server: the report counts those reads, and
	// go-redis's process-wide logger would print each failed dial in
	// between the progress lines.
	redis.SetLogger(&redisLogger{log: zap.NewNop()})
	rep, err := runChaos(ctx, *o, stderr)
	if err == nil && *reportFile != "" {
		err = rep.WriteJSONFile(*reportFile)
	}
	if err != nil {
		fmt.Fprintf(stderr, "capoller chaos: %v\n", err)
		return 1
	}
	if *jsonOut {
		if err := rep.WriteJSON(stdout); err != nil {
			return 1
		}
	} else {
		rep.WriteText(stdout)
	}
	if !rep.OK {
		return 1
	}
	return 0
}

// chaosFlags defines the harness's flags on fs.
func chaosFlags(fs *flag.FlagSet) *chaos.Options {
	o := &chaos.Options{}
	fs.DurationVar(&o.Duration, "duration", 10*time.Minute, "how long faults are injected (then the replicas catch up and the stream is checked)")
	fs.Int64Var(&o.Seed, "seed", 0, "seed of the fault schedule, the behaviours and the workload (0: from the clock); the report prints it, and the same seed replays the schedule")
	fs.StringVar(&o.RedisURL, "redis-url", "embedded", `Redis for the replicas' checkpoints, or "embedded": the harness's own (see --redis), which it restarts or fails over`)
	fs.StringVar(&o.RedisTopology, "redis", chaos.RedisSingle, "with --redis-url embedded: single (one redis-server, crashed and restarted), cluster (a Redis Cluster of 3 masters with a replica each: CLUSTER FAILOVER, FORCE and TAKEOVER on replicas, SIGKILL of masters restarted as replicas) or sentinel (a master, 2 replicas and 3 sentinels: SIGKILL of the master, SENTINEL FAILOVER)")
	fs.StringVar(&o.NATSURL, "nats-url", "embedded", `NATS with JetStream, or "embedded": an in-process server, which the harness restarts`)
	fs.BoolVar(&o.NATSCluster, "nats-cluster", false, "with --nats-url embedded: a 3-node cluster and an R3 stream; the harness takes one node down at a time")
	fs.StringVar(&o.Checkpoint, "checkpoint", "redis", "the replicas' checkpoint store: redis or natskv")
	fs.IntVar(&o.Replicas, "replicas", 3, "capoller run processes")
	fs.DurationVar(&o.Interval, "interval", time.Second, "the replicas' poll interval")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", 4*time.Second, "the replicas' lease TTL")
	fs.DurationVar(&o.FaultEvery, "fault-every", 3*time.Second, "mean time between two scheduled faults")
	fs.Float64Var(&o.Rate, "rate", 6, "new invocations per second over the whole fleet")
	fs.IntVar(&o.Quota, "api-quota", 600, "the emulator's API quota: calls per minute per account, action and region")
	fs.Float64Var(&o.QPS, "qps", 5, "the replicas' --qps (their group's rate per API, account and region)")
	fs.DurationVar(&o.CatchUp, "catch-up", 3*time.Minute, "how long the replicas get, after the faults, to announce every final status")
	fs.StringVar(&o.Partitions, "partitions", chaos.PartitionsOn, "network partitions of a replica (or all) from Redis or NATS, through a fault proxy per replica and engine, when the engines are the harness's own single servers: on (among the other faults), off, or only (no other scheduled fault; the replicas' hooks still fire)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run's directory (replica logs, engines' data) even when the run passed")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress lines on stderr")
	return o
}

// runChaos runs the harness with what it needs of this binary: its own
// executable for the replicas, the variable of their test hooks, run's
// way of opening a Redis URL (for the lease watch), and its redaction.
func runChaos(ctx context.Context, o chaos.Options, stderr io.Writer) (chaos.Report, error) {
	exe, err := os.Executable()
	if err != nil {
		return chaos.Report{}, err
	}
	o.Executable, o.HookEnv, o.Progress = exe, harness.FaultEnv, stderr
	return chaos.Run(ctx, o)
}
