package chaos

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/capoller/capoller/poller/sensitive"
)

// Options configures a chaos run; the CLI's flags set most of them.
type Options struct {
	// Duration is how long faults are injected; then the replicas get
	// CatchUp to announce every final status.
	Duration time.Duration
	CatchUp  time.Duration
	// Seed draws the schedule, the behaviours and the workload.
	Seed int64
	// RedisURL is the replicas' Redis, or "embedded": the harness's own,
	// of RedisTopology (single, cluster or sentinel).
	RedisURL      string
	RedisTopology string
	// NATSURL is NATS with JetStream, or "embedded": an in-process server
	// (with NATSCluster, a 3-node cluster).
	NATSURL     string
	NATSCluster bool
	// Checkpoint is the replicas' store: redis or natskv.
	Checkpoint string
	// Replicas are the `capoller run` processes, with Interval, LeaseTTL
	// and QPS.
	Replicas int
	Interval time.Duration
	LeaseTTL time.Duration
	QPS      float64
	// FaultEvery is the mean time between two scheduled faults; Rate the
	// new invocations per second over the fleet; Quota the emulator's
	// calls per minute per account, action and region.
	FaultEvery time.Duration
	Rate       float64
	Quota      int
	// Partitions is on, off or only.
	Partitions string
	// Keep keeps the run's directory even when it passed; Quiet drops the
	// progress lines.
	Keep  bool
	Quiet bool

	// Executable is the capoller binary the replicas run; in tests, the
	// test binary, acting as capoller through its TestMain.
	Executable string
	// Env is added to the replicas' environment (a test's binary needs a
	// variable to act as capoller).
	Env []string
	// HookEnv is the variable that arms a replica's test hook
	// (step:action:n); empty: no hook is armed.
	HookEnv string
	// Progress takes the progress lines.
	Progress io.Writer
}

// The values of Options.Partitions.
const (
	PartitionsOn   = "on"
	PartitionsOff  = "off"
	PartitionsOnly = "only"
)

// The Redis topologies `capoller chaos --redis` runs.
const (
	RedisSingle   = "single"   // one redis-server, crashed and restarted
	RedisCluster  = "cluster"  // a Redis Cluster, 3 masters with a replica each
	RedisSentinel = "sentinel" // a master, 2 replicas, 3 sentinels
)

// Validate refuses options the harness cannot run with; its errors name
// the flags.
func (o Options) Validate() error {
	if o.Duration <= 0 || o.Replicas < 1 || o.Interval <= 0 || o.LeaseTTL <= 0 || o.FaultEvery <= 0 || o.Rate <= 0 || o.QPS <= 0 || o.Quota < 0 {
		return errors.New("duration, replicas, interval, lease-ttl, fault-every, rate and qps must be positive")
	}
	if o.Partitions != PartitionsOn && o.Partitions != PartitionsOff && o.Partitions != PartitionsOnly {
		return fmt.Errorf("--partitions %q: want on, off or only", o.Partitions)
	}
	if o.Checkpoint != "redis" && o.Checkpoint != "natskv" {
		return fmt.Errorf("--checkpoint %q: want redis or natskv", o.Checkpoint)
	}
	return checkRedis(o)
}

// checkRedis refuses a topology the harness does not know, or a
// cluster or Sentinel with an engine of the operator's.
func checkRedis(o Options) error {
	switch o.RedisTopology {
	case RedisSingle:
		return nil
	case RedisCluster, RedisSentinel:
	default:
		if strings.Contains(o.RedisTopology, "://") {
			return fmt.Errorf("--redis: want single, cluster or sentinel; a URL goes in --redis-url")
		}
		return fmt.Errorf("--redis %q: want single, cluster or sentinel", o.RedisTopology)
	}
	if o.RedisURL != "embedded" {
		return fmt.Errorf("--redis %s starts engines of its own: give --redis-url embedded (the default), or --redis single with your URL", o.RedisTopology)
	}
	if o.Checkpoint != "redis" {
		return fmt.Errorf("--redis %s: only with --checkpoint redis", o.RedisTopology)
	}
	return nil
}

// replay is the command that replays the run's schedule.
func (o Options) replay() string {
	s := fmt.Sprintf("capoller chaos --seed %d --duration %v", o.Seed, o.Duration)
	if o.RedisTopology != "" && o.RedisTopology != RedisSingle {
		s += " --redis " + o.RedisTopology
	}
	if o.Partitions != "" && o.Partitions != PartitionsOn {
		s += " --partitions " + o.Partitions
	}
	return s
}

// redact hides a URL's credentials: they never reach the report.
func (o Options) redact(url string) string { return sensitive.RedactURL(url) }

// single reports whether Redis is one server (not a Cluster or Sentinel).
func (o Options) single() bool { return o.RedisTopology == "" || o.RedisTopology == RedisSingle }
