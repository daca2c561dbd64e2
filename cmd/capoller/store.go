package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/sensitive"
)

// groupStore is what the daemon needs of a checkpoint store: checkpoints,
// the group's leases, what status reads, and the shared API quota.
type groupStore interface {
	poller.Store
	poller.LeaseStore
	groupReader
	Take(ctx context.Context, key string, perSecond float64, burst int, now time.Time) (time.Duration, error)
}

// openStore opens the checkpoint store the configuration names. The
// returned func closes what it opened.
func openStore(ctx context.Context, cfg config, log *zap.Logger, js jetstream.JetStream, reg prometheus.Registerer) (groupStore, func(), error) {
	switch cfg.Checkpoint {
	case "redis":
		rdb, err := checkpoint.OpenRedis(cfg.RedisURL, cfg.Redis)
		if err != nil {
			return nil, nil, configError{err}
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			if !checkpoint.MayComeBack(err) { // wrong credentials, an ACL, a database index, TLS: waiting will not change it
				_ = rdb.Close()
				return nil, nil, fmt.Errorf("redis at %s: %w", sensitive.RedactURL(cfg.RedisURL), err)
			}
			log.Warn("Redis is not reachable yet; cycles will fail until it is", zap.String("url", sensitive.RedactURL(cfg.RedisURL)), zap.Error(err))
		}
		wait, grace := redisReplicaWait(cfg)
		rs, err := checkpoint.NewRedis(rdb, checkpoint.RedisOptions{KeyPrefix: cfg.KeyPrefix, Logger: log,
			HistoryMaxLen: historyLimit(cfg.HistoryMaxCount), HistoryMaxAge: historyLimit(cfg.HistoryMaxAge),
			ReplicaWait: wait, ReplicaGrace: grace})
		if err != nil {
			_ = rdb.Close()
			return nil, nil, configError{err}
		}
		if reg != nil {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capoller_redis_roundtrips_total",
				Help: "Requests sent to Redis by the checkpoint store (a pipeline is one)."},
				func() float64 { return float64(rs.RoundTrips()) }))
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capoller_redis_unreplicated_writes_total",
				Help: "Lease, staged batch and commit writes that Redis ran on a master but its replicas did not all acknowledge within redis-replica-wait: each failed and was retried."},
				func() float64 { return float64(rs.Unreplicated()) }))
		}
		return rs, func() { _ = rdb.Close() }, nil
	case "natskv":
		var kv *checkpoint.KV
		if err := retry(ctx, log, "open the checkpoint bucket", func() (err error) {
			kv, err = checkpoint.NewKV(ctx, js, checkpoint.KVOptions{Bucket: cfg.Bucket, Replicas: cfg.StreamReplicas, Logger: log,
				HistoryMaxLen: historyLimit(cfg.HistoryMaxCount), HistoryMaxAge: historyLimit(cfg.HistoryMaxAge)})
			return err
		}); err != nil {
			return nil, nil, err
		}
		return kv, func() {}, nil
	}
	return nil, nil, configError{fmt.Errorf("checkpoint %q: want redis or natskv", cfg.Checkpoint)}
}

// redisReplicaWait is how long the store's writes wait for the master's
// replicas, and for one that left, as checkpoint.RedisOptions takes them
// (negative: off). The wait is at most a tenth of lease-ttl: a renewal
// that waits must still fit in its round (a fifth of it) with room to
// spare.
func redisReplicaWait(cfg config) (wait, grace time.Duration) {
	wait, grace = -1, -1
	if cfg.RedisReplicaWait > 0 {
		wait = max(min(cfg.RedisReplicaWait, cfg.LeaseTTL/10), time.Millisecond)
	}
	if cfg.RedisReplicaGrace > 0 {
		grace = cfg.RedisReplicaGrace
	}
	return wait, grace
}

// replicaID is the configured name (the host name if none) plus a random
// suffix: two processes given one name, or a replica restarted before its
// old leases expired, are never taken for one another.
func replicaID(name, host string) string {
	if name == "" {
		name = host
	}
	if name == "" {
		name = "capoller"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '_' || r == '-' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') {
			return r
		}
		return '-'
	}, name) + "-" + hex.EncodeToString(b)
}

// replicaName is the --replica-id a replica's id was made from (see
// replicaID).
func replicaName(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}

// testHookEnv arms a fault for tests: CAPOLLER_TEST_STOP_AT=<step> makes
// the process stop itself (SIGSTOP) the first time a batch reaches that
// step (fetched, staged, published or committed), so that a test can
// resume it past its lease. Never set it in production.
const testHookEnv = "CAPOLLER_TEST_STOP_AT"

// testFaultEnv arms a fault for tests and `capoller chaos`:
// CAPOLLER_TEST_FAULT_AT=<step>:<kill|stop>[:<n>] makes the process kill
// itself (SIGKILL) or stop itself (SIGSTOP, until SIGCONT) the n-th time
// (default the first) a batch reaches step, so that a harness can land a
// crash or a pause at every step of the cycle. It wins over testHookEnv.
// Never set it in production.
const testFaultEnv = "CAPOLLER_TEST_FAULT_AT"

// hookFault is the fault the test environment arms.
type hookFault struct {
	step   poller.Step
	action string // "kill" or "stop"
	nth    int
}

// parseHookFault reads testFaultEnv's value, or testHookEnv's as
// "<step>:stop:1"; the zero hookFault means none.
func parseHookFault(fault, stopAt string) (hookFault, error) {
	if fault == "" {
		if stopAt == "" {
			return hookFault{}, nil
		}
		fault = stopAt + ":stop"
	}
	parts := strings.Split(fault, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return hookFault{}, fmt.Errorf("%s=%q: want <step>:<kill|stop>[:<n>]", testFaultEnv, fault)
	}
	h := hookFault{step: poller.Step(parts[0]), action: parts[1], nth: 1}
	switch h.step {
	case poller.StepFetched, poller.StepStaged, poller.StepPublished, poller.StepCommitted:
	default:
		return hookFault{}, fmt.Errorf("%s: unknown step %q (want fetched, staged, published or committed)", testFaultEnv, parts[0])
	}
	if h.action != "kill" && h.action != "stop" {
		return hookFault{}, fmt.Errorf("%s: unknown action %q (want kill or stop)", testFaultEnv, h.action)
	}
	if len(parts) == 3 {
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 {
			return hookFault{}, fmt.Errorf("%s: the count %q is not a positive integer", testFaultEnv, parts[2])
		}
		h.nth = n
	}
	return h, nil
}

// testHook returns the poller hook the environment arms, or nil.
func testHook(log *zap.Logger) func(poller.Step) {
	f, err := parseHookFault(os.Getenv(testFaultEnv), os.Getenv(testHookEnv))
	if err != nil {
		log.Warn("a test hook is set but invalid; it is ignored", zap.Error(err))
		return nil
	}
	if f.step == "" {
		return nil
	}
	log.Warn("a TEST HOOK is armed: this process kills or stops itself at a step of a batch; never set it in production",
		zap.String("step", string(f.step)), zap.String("action", f.action), zap.Int("nth", f.nth))
	var mu sync.Mutex
	seen := 0
	return func(s poller.Step) {
		if s != f.step {
			return
		}
		mu.Lock()
		defer mu.Unlock() // held while stopped: no other batch runs on into a step meanwhile
		seen++
		if seen != f.nth {
			return
		}
		log.Warn("test hook: firing", zap.String("step", string(s)), zap.String("action", f.action), zap.Int("nth", f.nth))
		_ = log.Sync()
		if f.action == "kill" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught: the process ends here
		}
		// A signal to oneself takes effect soon, not at once: wait for the
		// SIGCONT, or this goroutine could run on into the next step before
		// the process stops.
		cont := make(chan os.Signal, 1)
		signal.Notify(cont, syscall.SIGCONT)
		defer signal.Stop(cont)
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		<-cont
		log.Warn("test hook: resumed", zap.String("step", string(s)))
	}
}
