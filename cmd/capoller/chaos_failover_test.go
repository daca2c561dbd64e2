package main

import (
	"testing"
	"time"

	"github.com/capoller/capoller/cmd/internal/chaos"
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
func TestChaosRedisCluster(t *testing.T) { chaosRedisShort(t, chaos.RedisCluster) }

// TestChaosRedisSentinel is the same with a master, two replicas and
// three sentinels, the master killed (and restarted, to come back as a
// replica) or failed over with SENTINEL FAILOVER.
func TestChaosRedisSentinel(t *testing.T) { chaosRedisShort(t, chaos.RedisSentinel) }

func chaosRedisShort(t *testing.T, topology string) {
	if testing.Short() {
		t.Skip("a minute of chaos with replicas as processes and a Redis " + topology)
	}
	o := chaosCIOptions(t)
	o.RedisTopology, o.FaultEvery, o.CatchUp = topology, 2500*time.Millisecond, 90*time.Second
	rep := runChaosCI(t, o)
	failovers := 0
	for kind, n := range rep.Faults {
		if chaos.IsRedisFailover(kind) {
			failovers += n
		}
	}
	if rep.Generated == 0 || rep.Published == 0 || failovers == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, faults %v", o.Seed, rep.Generated, rep.Published, rep.Faults)
	}
}
