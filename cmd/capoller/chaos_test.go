package main

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/truthcheck"
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
	seed := chaosSeed(t)
	o := chaosOptions{duration: 55 * time.Second, seed: seed, redisURL: "embedded", natsURL: "embedded", checkpoint: "redis",
		replicas: 3, interval: time.Second, leaseTTL: 4 * time.Second, faultEvery: 2500 * time.Millisecond, rate: 3,
		quota: 600, qps: 5, catchUp: 75 * time.Second, partitions: "on", env: []string{beMainEnv + "=1"}}
	rep := runChaosCI(t, o)
	if rep.Generated == 0 || rep.Published == 0 || sum(rep.HookHits) == 0 || rep.Faults[faultKill]+rep.Faults[faultStop] == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, hooks hit %v, faults %v",
			seed, rep.Generated, rep.Published, rep.HookHits, rep.Faults)
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
	seed := chaosSeed(t)
	o := chaosOptions{duration: 55 * time.Second, seed: seed, redisURL: "embedded", natsURL: "embedded", checkpoint: "redis",
		replicas: 3, interval: time.Second, leaseTTL: 4 * time.Second, faultEvery: 5 * time.Second, rate: 3,
		quota: 600, qps: 5, catchUp: 75 * time.Second, partitions: "only", env: []string{beMainEnv + "=1"}}
	rep := runChaosCI(t, o)
	lost := 0 // the schedule opens with a hole of one replica for longer than its lease
	for _, c := range rep.Partitions.Checks {
		if c.Lost == "judged" {
			lost++
		}
	}
	if rep.Generated == 0 || rep.Published == 0 || lost == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, %d partitions long enough to lose shards, faults %v",
			seed, rep.Generated, rep.Published, lost, rep.Faults)
	}
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
func runChaosCI(t *testing.T, o chaosOptions) chaosReport {
	t.Helper()
	t.Logf("seed %d; replay with CAPOLLER_CHAOS_SEED=%d, or: capoller chaos --seed %d --duration %v --rate %g --fault-every %v --partitions %s",
		o.seed, o.seed, o.seed, o.duration, o.rate, o.faultEvery, o.partitions)
	var progress syncBuffer
	rep, err := runChaos(t.Context(), o, &progress)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("seed %d: %v", o.seed, err)
	}
	var summary strings.Builder
	printChaos(&summary, rep)
	t.Logf("summary:\n%s", summary.String())
	if !rep.OK {
		t.Errorf("seed %d: the promise broke (or the replicas did not catch up, or a partitioned replica misbehaved); the summary above has the violations and the kept logs", o.seed)
	}
	return rep
}

// TestChaosScheduleReplays: a seed gives the same faults and hooks; the
// engines' restarts are scheduled only when the harness runs them.
func TestChaosScheduleReplays(t *testing.T) {
	o := chaosOptions{duration: 10 * time.Minute, seed: 7, replicas: 3, leaseTTL: 4 * time.Second, faultEvery: 3 * time.Second, checkpoint: "redis"}
	a, b := chaosSchedule(o, true, true), chaosSchedule(o, true, true)
	if !reflect.DeepEqual(a, b) || len(a) < 100 {
		t.Fatalf("two schedules from one seed differ, or are short (%d faults)", len(a))
	}
	kinds := map[string]int{}
	var prev chaosFault
	var partitionEnd, engineEnd time.Duration
	for i, f := range a {
		if i > 0 && f.At < prev.At {
			t.Errorf("%s at %v after %s at %v", f.Kind, f.At, prev.Kind, prev.At)
		}
		prev = f
		if isPartition(f.Kind) {
			if f.At < partitionEnd+2*o.leaseTTL || f.At < engineEnd+o.leaseTTL || f.At+f.For > o.duration {
				t.Errorf("%s at %v for %v: the last partition ended at %v, the last engine restart at %v", f.Kind, f.At, f.For, partitionEnd, engineEnd)
			}
			partitionEnd = f.At + f.For
		}
		if f.Kind == faultRedis || f.Kind == faultNATS {
			if f.At < partitionEnd {
				t.Errorf("%s at %v, during a partition (until %v)", f.Kind, f.At, partitionEnd)
			}
			engineEnd = max(engineEnd, f.At+f.For)
		}
		kinds[f.Kind]++
		if f.At <= 0 || f.At >= o.duration {
			t.Errorf("fault at %v, outside the run", f.At)
		}
		if f.Kind == faultStop && f.For <= o.leaseTTL {
			t.Errorf("a stop of %v does not outlast the lease TTL %v", f.For, o.leaseTTL)
		}
		if isPartition(f.Kind) {
			kinds[f.Kind+" "+f.Link]++
			if f.AllReplicas {
				kinds[f.Kind+" all"]++
			}
			checkPartitionDraw(t, o, f)
		}
	}
	for _, k := range []string{faultKill, faultStop, faultRedis, faultNATS, faultThrottle, faultServerError, faultSlow, faultMalformed, faultInvalidToken, faultBehaviour,
		faultPartitionHole, faultPartitionReset, faultPartitionLatency, faultPartitionHole + " " + linkRedis, faultPartitionHole + " " + linkNATS,
		faultPartitionHole + " " + linkBoth, faultPartitionHole + " all", faultPartitionReset + " all"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in 10 minutes: %v", k, kinds)
		}
	}
	for _, f := range chaosSchedule(o, false, false) {
		if f.Kind == faultRedis || f.Kind == faultNATS || f.Kind == faultNATSNode || isPartition(f.Kind) {
			t.Fatalf("%s scheduled against engines the harness did not start", f.Kind)
		}
	}
	// Partitions only where a proxy can cut the link: not of a NATS
	// cluster, not of Redis when checkpoints are in JetStream KV, none
	// with --partitions off; only partitions with --partitions only.
	for _, tc := range []struct {
		name       string
		o          chaosOptions
		kinds      func(chaosFault) bool
		partitions bool
	}{
		{"nats cluster", chaosOptions{natsCluster: true, checkpoint: "redis"}, func(f chaosFault) bool { return f.Link == linkRedis }, true},
		{"natskv", chaosOptions{checkpoint: "natskv"}, func(f chaosFault) bool { return f.Link == linkNATS }, true},
		{"off", chaosOptions{checkpoint: "redis", partitions: "off"}, func(chaosFault) bool { return true }, false},
		{"only", chaosOptions{checkpoint: "redis", partitions: "only"}, func(f chaosFault) bool { return isPartition(f.Kind) }, true},
	} {
		if tc.o.partitions == "only" {
			// It opens with a hole of one replica, past its lease.
			for seed := range int64(50) {
				oo := tc.o
				oo.duration, oo.seed, oo.replicas, oo.leaseTTL, oo.faultEvery = time.Minute, seed, 3, o.leaseTTL, 5*time.Second
				first := chaosSchedule(oo, true, true)[0]
				if first.Kind != faultPartitionHole || first.AllReplicas || first.For < o.leaseTTL {
					t.Errorf("seed %d: the partitions open with %+v", seed, first)
				}
			}
		}
		oo := tc.o
		oo.duration, oo.seed, oo.replicas, oo.leaseTTL, oo.faultEvery = o.duration, o.seed, o.replicas, o.leaseTTL, o.faultEvery
		n := 0
		for _, f := range chaosSchedule(oo, true, true) {
			if !isPartition(f.Kind) {
				if tc.o.partitions == "only" {
					t.Errorf("%s: %s scheduled", tc.name, f.Kind)
				}
				continue
			}
			n++
			if !tc.partitions || !tc.kinds(f) {
				t.Errorf("%s: %s of %s scheduled", tc.name, f.Kind, f.Link)
			}
		}
		if tc.partitions != (n > 0) {
			t.Errorf("%s: %d partitions", tc.name, n)
		}
	}
	if b := chaosSchedule(chaosOptions{duration: o.duration, seed: 8, replicas: 3, leaseTTL: o.leaseTTL, faultEvery: o.faultEvery, checkpoint: "redis"}, true, true); reflect.DeepEqual(a, b) {
		t.Error("two seeds give the same schedule")
	}
	armA, armB := chaosArms(7), chaosArms(7)
	steps := map[poller.Step]bool{}
	for range 200 {
		x, y := armA(), armB()
		if x != y {
			t.Fatalf("arms differ: %v, %v", x, y)
		}
		steps[x.step] = true
	}
	if len(steps) != 5 { // the four steps and none
		t.Errorf("arms cover %v", steps)
	}
	if len(truthcheck.Kinds()) != 5 {
		t.Errorf("kinds %v", truthcheck.Kinds())
	}
}

// checkPartitionDraw checks a partition's target and length: a hole or
// a reset of one replica lasts at least a TTL (so that its shards move),
// of every replica at most one.
func checkPartitionDraw(t *testing.T, o chaosOptions, f chaosFault) {
	t.Helper()
	if f.Link != linkRedis && f.Link != linkNATS && f.Link != linkBoth {
		t.Errorf("%s of link %q", f.Kind, f.Link)
	}
	if f.Replica < 0 || f.Replica >= o.replicas || (f.AllReplicas && f.Replica != 0) {
		t.Errorf("%s of replica %d (all %v)", f.Kind, f.Replica, f.AllReplicas)
	}
	switch {
	case f.Kind == faultPartitionLatency:
		d, err := time.ParseDuration(f.Detail)
		if err != nil || d <= 0 || d > o.leaseTTL/5 || f.For < 2*time.Second {
			t.Errorf("latency %q for %v", f.Detail, f.For)
		}
	case f.AllReplicas && (f.For < o.leaseTTL/4 || f.For > o.leaseTTL):
		t.Errorf("%s of every replica for %v", f.Kind, f.For)
	case !f.AllReplicas && (f.For < o.leaseTTL || f.For > 3*o.leaseTTL):
		t.Errorf("%s of one replica for %v", f.Kind, f.For)
	}
}

func TestParseHookFault(t *testing.T) {
	for _, tc := range []struct {
		fault, stopAt string
		want          hookFault
		bad           bool
	}{
		{"", "", hookFault{}, false},
		{"", "published", hookFault{step: poller.StepPublished, action: "stop", nth: 1}, false},
		{"staged:kill:3", "published", hookFault{step: poller.StepStaged, action: "kill", nth: 3}, false},
		{"committed:stop", "", hookFault{step: poller.StepCommitted, action: "stop", nth: 1}, false},
		{"nowhere:kill", "", hookFault{}, true},
		{"fetched:explode", "", hookFault{}, true},
		{"fetched:kill:0", "", hookFault{}, true},
		{"fetched", "", hookFault{}, true},
	} {
		got, err := parseHookFault(tc.fault, tc.stopAt)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseHookFault(%q, %q) = %+v, %v", tc.fault, tc.stopAt, got, err)
		}
	}
}
