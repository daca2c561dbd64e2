package chaos

import (
	"strings"
	"testing"
	"time"
)

// TestChaosRedisSchedules: a cluster's schedule fails masters over in
// every way and never restarts a single server; a Sentinel's kills its
// master; a short one fails a master over at least once whatever the
// seed; and --redis with an engine of the operator's is refused.
func TestChaosRedisSchedules(t *testing.T) {
	for _, tc := range []struct {
		topology string
		want     []string
	}{
		{RedisCluster, []string{FaultFailover, FaultFailoverForce, FaultFailoverTakeover, FaultMasterKill, FaultLagKill}},
		{RedisSentinel, []string{FaultFailover, FaultMasterKill, FaultLagKill}},
	} {
		o := Options{Duration: 10 * time.Minute, Seed: 7, Replicas: 3, LeaseTTL: 4 * time.Second, FaultEvery: 3 * time.Second,
			Checkpoint: "redis", RedisTopology: tc.topology}
		kinds := map[string]int{}
		for _, f := range drawSchedule(o, true, true) {
			kinds[f.Kind]++
			if (f.Kind == FaultMasterKill || f.Kind == FaultLagKill) && (f.For < 2*time.Second || f.Replica < 0 || f.Replica > 2) {
				t.Errorf("%s: a master kill of group %d for %v", tc.topology, f.Replica, f.For)
			}
			if lag, err := time.ParseDuration(f.Detail); f.Kind == FaultLagKill && (err != nil || lag <= 0 || lag >= downAfter) {
				t.Errorf("%s: replicas cut off for %q before their master dies: want less than the failure detection", tc.topology, f.Detail)
			}
		}
		for _, k := range tc.want {
			if kinds[k] == 0 {
				t.Errorf("%s: no %s in 10 minutes: %v", tc.topology, k, kinds)
			}
		}
		if kinds[FaultRedis] != 0 {
			t.Errorf("%s: %d single-server restarts scheduled", tc.topology, kinds[FaultRedis])
		}
		for seed := range int64(200) {
			o := Options{Duration: 20 * time.Second, Seed: seed, Replicas: 3, LeaseTTL: 4 * time.Second, FaultEvery: 5 * time.Second,
				Checkpoint: "redis", RedisTopology: tc.topology, Partitions: "on"}
			failovers := 0
			for _, f := range drawSchedule(o, true, true) {
				if IsRedisFailover(f.Kind) {
					failovers++
				}
			}
			if failovers == 0 {
				t.Fatalf("%s, seed %d: no failover in a short run", tc.topology, seed)
			}
		}
	}
	for _, o := range []Options{
		{RedisTopology: RedisCluster, RedisURL: "redis://127.0.0.1:6379/0", Checkpoint: "redis"},
		{RedisTopology: RedisSentinel, RedisURL: "embedded", Checkpoint: "natskv"},
		{RedisTopology: "ring", RedisURL: "embedded", Checkpoint: "redis"},
		{RedisTopology: "redis://127.0.0.1:6379/0", RedisURL: "embedded", Checkpoint: "redis"},
	} {
		if err := checkRedis(o); err == nil || !strings.Contains(err.Error(), "--redis") {
			t.Errorf("%+v: %v, want an error naming --redis", o, err)
		}
	}
	if err := checkRedis(Options{RedisTopology: RedisCluster, RedisURL: "embedded", Checkpoint: "redis"}); err != nil {
		t.Errorf("an embedded cluster: %v", err)
	}
}
