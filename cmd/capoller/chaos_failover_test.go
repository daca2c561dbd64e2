package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaosRedisCluster is the CI mode of `capoller chaos --redis
// cluster`: TestChaosShort's minute of faults, with the checkpoints in a
// Redis Cluster of three masters with a replica each, whose masters the
// harness fails over (CLUSTER FAILOVER, FORCE, TAKEOVER on a replica) or
// kills and restarts as replicas. The replicas wait for every write that
// matters to reach the master's replica (redis-replica-wait), so no
// failover loses what the stream announced: the stream must hold every
// final status, in order, with consistent previous statuses, and nothing
// twice. CAPOLLER_CHAOS_SEED replays a seed, as for TestChaosShort.
func TestChaosRedisCluster(t *testing.T) { chaosRedisShort(t, chaosRedisCluster) }

// TestChaosRedisSentinel is the same with a master, two replicas and
// three sentinels, the master killed (and restarted, to come back as a
// replica) or failed over with SENTINEL FAILOVER.
func TestChaosRedisSentinel(t *testing.T) { chaosRedisShort(t, chaosRedisSentinel) }

func chaosRedisShort(t *testing.T, topology string) {
	if testing.Short() {
		t.Skip("a minute of chaos with replicas as processes and a Redis " + topology)
	}
	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv("CAPOLLER_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("CAPOLLER_CHAOS_SEED=%q: %v", s, err)
		}
	}
	o := chaosOptions{duration: 55 * time.Second, seed: seed, redisURL: "embedded", redisTopology: topology, natsURL: "embedded", checkpoint: "redis",
		replicas: 3, interval: time.Second, leaseTTL: 4 * time.Second, faultEvery: 2500 * time.Millisecond, rate: 3,
		quota: 600, qps: 5, catchUp: 90 * time.Second, partitions: "on", env: []string{beMainEnv + "=1"}}
	t.Logf("seed %d; replay with CAPOLLER_CHAOS_SEED=%d, or: capoller chaos --seed %d --duration %v --rate %g --fault-every %v --redis %s",
		seed, seed, seed, o.duration, o.rate, o.faultEvery, topology)
	var progress syncBuffer
	rep, err := runChaos(t.Context(), o, &progress)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	var summary strings.Builder
	printChaos(&summary, rep)
	t.Logf("summary:\n%s", summary.String())
	if !rep.OK {
		t.Errorf("seed %d: the promise broke (or the replicas did not catch up); the summary above has the violations and the kept logs", seed)
	}
	failovers := 0
	for kind, n := range rep.Faults {
		if isRedisFailover(kind) {
			failovers += n
		}
	}
	if rep.Generated == 0 || rep.Published == 0 || failovers == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, faults %v", seed, rep.Generated, rep.Published, rep.Faults)
	}
}

// TestChaosRedisSchedules: a cluster's schedule fails masters over in
// every way and never restarts a single server; a Sentinel's kills its
// master; a short one fails a master over at least once whatever the
// seed; and --redis with an engine of the operator's is refused.
func TestChaosRedisSchedules(t *testing.T) {
	for _, tc := range []struct {
		topology string
		want     []string
	}{
		{chaosRedisCluster, []string{faultFailover, faultFailoverForce, faultFailoverTakeover, faultMasterKill, faultLagKill}},
		{chaosRedisSentinel, []string{faultFailover, faultMasterKill, faultLagKill}},
	} {
		o := chaosOptions{duration: 10 * time.Minute, seed: 7, replicas: 3, leaseTTL: 4 * time.Second, faultEvery: 3 * time.Second,
			checkpoint: "redis", redisTopology: tc.topology}
		kinds := map[string]int{}
		for _, f := range chaosSchedule(o, true, true) {
			kinds[f.Kind]++
			if (f.Kind == faultMasterKill || f.Kind == faultLagKill) && (f.For < 2*time.Second || f.Replica < 0 || f.Replica > 2) {
				t.Errorf("%s: a master kill of group %d for %v", tc.topology, f.Replica, f.For)
			}
			if lag, err := time.ParseDuration(f.Detail); f.Kind == faultLagKill && (err != nil || lag <= 0 || lag >= chaosDownAfter) {
				t.Errorf("%s: replicas cut off for %q before their master dies: want less than the failure detection", tc.topology, f.Detail)
			}
		}
		for _, k := range tc.want {
			if kinds[k] == 0 {
				t.Errorf("%s: no %s in 10 minutes: %v", tc.topology, k, kinds)
			}
		}
		if kinds[faultRedis] != 0 {
			t.Errorf("%s: %d single-server restarts scheduled", tc.topology, kinds[faultRedis])
		}
		for seed := range int64(200) {
			o := chaosOptions{duration: 20 * time.Second, seed: seed, replicas: 3, leaseTTL: 4 * time.Second, faultEvery: 5 * time.Second,
				checkpoint: "redis", redisTopology: tc.topology, partitions: "on"}
			failovers := 0
			for _, f := range chaosSchedule(o, true, true) {
				if isRedisFailover(f.Kind) {
					failovers++
				}
			}
			if failovers == 0 {
				t.Fatalf("%s, seed %d: no failover in a short run", tc.topology, seed)
			}
		}
	}
	for _, o := range []chaosOptions{
		{redisTopology: chaosRedisCluster, redisURL: "redis://127.0.0.1:6379/0", checkpoint: "redis"},
		{redisTopology: chaosRedisSentinel, redisURL: "embedded", checkpoint: "natskv"},
		{redisTopology: "ring", redisURL: "embedded", checkpoint: "redis"},
		{redisTopology: "redis://127.0.0.1:6379/0", redisURL: "embedded", checkpoint: "redis"},
	} {
		if err := checkChaosRedis(o); err == nil || !strings.Contains(err.Error(), "--redis") {
			t.Errorf("%+v: %v, want an error naming --redis", o, err)
		}
	}
	if err := checkChaosRedis(chaosOptions{redisTopology: chaosRedisCluster, redisURL: "embedded", checkpoint: "redis"}); err != nil {
		t.Errorf("an embedded cluster: %v", err)
	}
}
