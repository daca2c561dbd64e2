package chaos

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/capoller/capoller/poller"
)

// The scheduled faults.
const (
	FaultKill         = "kill"              // SIGKILL a replica, restart it after a while
	FaultStop         = "stop"              // SIGSTOP a replica past its lease, then SIGCONT
	FaultRedis        = "redis-restart"     // kill redis-server, start it again
	FaultNATS         = "nats-restart"      // shut the NATS server down, start it again
	FaultNATSNode     = "nats-node-loss"    // shut one cluster node down, start it again
	FaultThrottle     = "api-throttle"      // a burst of Throttling.User
	FaultServerError  = "api-5xx"           // 503, 500 or 502 HTML
	FaultSlow         = "api-slow"          // slow responses
	FaultMalformed    = "api-malformed"     // undecodable or truncated bodies
	FaultInvalidToken = "api-invalid-token" // NextTokens refused as invalid
	FaultBehaviour    = "behaviour"         // a new random mix of the API's silent behaviours (order, ties, drift, token expiry, …)
	FaultHook         = "hook"              // a replica killed or stopped itself at a step (counted by step)
)

// The Redis failovers scheduled with --redis cluster or sentinel.
const (
	FaultFailover         = "redis-failover"          // CLUSTER FAILOVER on a replica (with its master's agreement), or SENTINEL FAILOVER
	FaultFailoverForce    = "redis-failover-force"    // CLUSTER FAILOVER FORCE: the replica takes over without its master's agreement
	FaultFailoverTakeover = "redis-failover-takeover" // CLUSTER FAILOVER TAKEOVER: without the other masters' votes either
	FaultMasterKill       = "redis-master-kill"       // SIGKILL a master; restarted later, it comes back as a replica
	// FaultLagKill cuts a master's replicas off (SIGSTOP, and the master
	// drops their links) for a moment, then kills the master: the replica
	// promoted lacks every write the master acknowledged meanwhile, the
	// loss that asynchronous replication allows, made certain.
	FaultLagKill = "redis-lag-kill"
)

// Network partitions: a fault proxy of the harness's own sits between
// each replica and Redis, and between each replica and NATS, when the
// harness runs a single server of each. Redis Cluster and Sentinel, and
// NATS clusters, hand their clients the other nodes' addresses, which
// would go around a proxy: there, no partition is injected.
const (
	FaultPartitionHole    = "partition-blackhole" // traffic swallowed both ways, connections kept open
	FaultPartitionReset   = "partition-reset"     // connections reset, new ones too
	FaultPartitionLatency = "partition-latency"   // every chunk delayed, both ways
)

// The links a partition cuts.
const (
	linkRedis = "redis"
	linkNATS  = "nats"
	linkBoth  = "redis+nats"
)

// Fault is one entry of the schedule, all drawn from the seed.
type Fault struct {
	At      time.Duration `json:"-"`
	AtText  string        `json:"at"`
	Kind    string        `json:"kind"`
	Replica int           `json:"replica,omitempty"`
	For     time.Duration `json:"-"`
	ForText string        `json:"for,omitempty"`
	Rate    float64       `json:"rate,omitempty"`
	Detail  string        `json:"detail,omitempty"`
	Seed    int64         `json:"behaviourSeed,omitempty"`
	// Link is what a partition cuts (redis, nats or redis+nats), of
	// every replica with AllReplicas.
	Link        string `json:"link,omitempty"`
	AllReplicas bool   `json:"allReplicas,omitempty"`
	// Skipped says why the fault was not applied (its target was down, or
	// the engine was already restarting).
	Skipped string `json:"skipped,omitempty"`
}

// weighted is a kind of fault and its weight in the schedule.
type weighted struct {
	kind string
	w    int
}

// isPartition reports whether a fault kind is a network partition.
func isPartition(kind string) bool {
	return kind == FaultPartitionHole || kind == FaultPartitionReset || kind == FaultPartitionLatency
}

// IsRedisFailover reports whether a fault kind fails a Redis master over
// (--redis cluster or sentinel).
func IsRedisFailover(kind string) bool {
	switch kind {
	case FaultFailover, FaultFailoverForce, FaultFailoverTakeover, FaultMasterKill, FaultLagKill:
		return true
	}
	return false
}

// isEngineOutage reports whether a fault takes Redis or NATS, or a part
// of them, away for a while.
func isEngineOutage(kind string) bool {
	return kind == FaultRedis || kind == FaultNATS || kind == FaultNATSNode || IsRedisFailover(kind)
}

// hook is a test hook to arm in a replica at its start.
type hook struct {
	step   poller.Step
	action string
	nth    int
}

// env is the variable name set to arm the hook.
func (a hook) env(name string) string {
	return fmt.Sprintf("%s=%s:%s:%d", name, a.step, a.action, a.nth)
}

// key names the hook in the report: kill@published.
func (a hook) key() string { return a.action + "@" + string(a.step) }

// drawHooks draws, from the seed, the hooks armed at each replica start,
// in start order: four starts in five arm a kill or a stop at the n-th
// batch at one of the cycle's steps.
func drawHooks(seed int64) func() hook {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x686f6f6b)) // "hook"
	steps := []poller.Step{poller.StepFetched, poller.StepStaged, poller.StepPublished, poller.StepCommitted}
	return func() hook {
		if rng.IntN(10) < 2 {
			return hook{}
		}
		a := hook{step: steps[rng.IntN(len(steps))], action: "kill", nth: 1 + rng.IntN(4)}
		if rng.IntN(10) < 3 {
			a.action = "stop"
		}
		if a.step == poller.StepFetched {
			a.nth = 1 + rng.IntN(20) // every page is one
		}
		return a
	}
}
