package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/cmd/internal/chaos"
)

// TestChaosShort is the CI mode of `capoller chaos`: three replicas as
// child processes, against a redis-server and a NATS server of the
// harness's own, for 55 s of faults with a new seed each run
// (CAPOLLER_CHAOS_SEED replays one): SIGKILL and SIGSTOP of replicas,
// kills and stops armed at every step of the cycle, Redis and NATS
// restarts, network partitions of a replica (or all) from Redis or NATS,
// API throttling, 5xx, slow and malformed responses, invalid NextTokens
// and random behaviours. Once the replicas caught up, the whole stream
// must hold every final status, in order, with consistent previous
// statuses, and nothing twice; and the partitioned replicas must have
// behaved (see TestChaosPartitions).
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of chaos with replicas as processes")
	}
	o := chaosCIOptions(t)
	o.FaultEvery, o.CatchUp = 2500*time.Millisecond, 75*time.Second
	rep := runChaosCI(t, o)
	if rep.Generated == 0 || rep.Published == 0 || len(rep.HookHits) == 0 || rep.Faults[chaos.FaultKill]+rep.Faults[chaos.FaultStop] == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, hooks hit %v, faults %v",
			o.Seed, rep.Generated, rep.Published, rep.HookHits, rep.Faults)
	}
}

// TestChaosPartitions is the CI mode of `capoller chaos --partitions
// only`: for 55 s, network partitions alone (and the replicas' own hooks),
// one at a time: a black hole, resets or latency between one replica (or
// every one) and Redis, NATS or both. Besides the stream's promise, a
// replica cut from Redis publishes nothing once its claims expired; one
// cut for longer than a TTL loses its shards within it, and the others
// take them; after the partition each replica holds shards again and none
// exits by itself.
func TestChaosPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of chaos with replicas as processes")
	}
	o := chaosCIOptions(t)
	o.FaultEvery, o.CatchUp, o.Partitions = 5*time.Second, 75*time.Second, chaos.PartitionsOnly
	rep := runChaosCI(t, o)
	lost := 0 // the schedule opens with a hole of one replica for longer than its lease
	for _, c := range rep.Partitions.Checks {
		if c.Lost == "judged" {
			lost++
		}
	}
	if rep.Generated == 0 || rep.Published == 0 || lost == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, %d partitions long enough to lose shards, faults %v",
			o.Seed, rep.Generated, rep.Published, lost, rep.Faults)
	}
}

// chaosCIOptions are what the CI modes share: 55 s of faults, with the
// seed of chaosSeed, against engines of the harness's own, with this
// test binary acting as capoller.
func chaosCIOptions(t *testing.T) chaos.Options {
	t.Helper()
	return chaos.Options{Duration: 55 * time.Second, Seed: chaosSeed(t), RedisURL: "embedded", NATSURL: "embedded", Checkpoint: "redis",
		Replicas: 3, Interval: time.Second, LeaseTTL: 4 * time.Second, Rate: 3,
		Quota: 600, QPS: 5, Partitions: chaos.PartitionsOn, Env: []string{beMainEnv + "=1"}}
}

// chaosSeed is CAPOLLER_CHAOS_SEED, or a new seed.
func chaosSeed(t *testing.T) int64 {
	t.Helper()
	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv("CAPOLLER_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("CAPOLLER_CHAOS_SEED=%q: %v", s, err)
		}
	}
	return seed
}

// runChaosCI runs the harness, logs its progress and summary, and fails
// the test if the promise broke.
func runChaosCI(t *testing.T, o chaos.Options) chaos.Report {
	t.Helper()
	replay := "--partitions " + o.Partitions
	if o.RedisTopology != "" {
		replay = "--redis " + o.RedisTopology
	}
	t.Logf("seed %d; replay with CAPOLLER_CHAOS_SEED=%d, or: capoller chaos --seed %d --duration %v --rate %g --fault-every %v %s",
		o.Seed, o.Seed, o.Seed, o.Duration, o.Rate, o.FaultEvery, replay)
	var progress syncBuffer
	rep, err := runChaos(t.Context(), o, &progress)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("seed %d: %v", o.Seed, err)
	}
	var summary strings.Builder
	rep.WriteText(&summary)
	t.Logf("summary:\n%s", summary.String())
	if !rep.OK {
		t.Errorf("seed %d: the promise broke (or the replicas did not catch up, or a partitioned replica misbehaved); the summary above has the violations and the kept logs", o.Seed)
	}
	return rep
}
