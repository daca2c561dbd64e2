package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/poller"
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
func openStore(ctx context.Context, cfg config, log *zap.Logger, js jetstream.JetStream, metrics *poller.Metrics) (groupStore, func(), error) {
	switch cfg.Checkpoint {
	case "redis":
		rdb, err := openRedis(cfg.RedisURL)
		if err != nil {
			return nil, nil, configError{err}
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			log.Warn("Redis is not reachable yet; cycles will fail until it is", zap.String("url", redactURL(cfg.RedisURL)), zap.Error(err))
		}
		rs, err := checkpoint.NewRedis(rdb, checkpoint.RedisOptions{KeyPrefix: cfg.KeyPrefix, Logger: log,
			HistoryMaxLen: historyLimit(cfg.HistoryMaxCount), HistoryMaxAge: historyLimit(cfg.HistoryMaxAge)})
		if err != nil {
			_ = rdb.Close()
			return nil, nil, configError{err}
		}
		if metrics != nil {
			metrics.Func("capoller_redis_roundtrips_total", "counter", "Requests sent to Redis by the checkpoint store (a pipeline is one).",
				func() float64 { return float64(rs.RoundTrips()) })
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

// testHook returns the poller hook the environment arms, or nil.
func testHook(log *zap.Logger) func(poller.Step) {
	at := poller.Step(os.Getenv(testHookEnv))
	if at == "" {
		return nil
	}
	log.Warn("a test hook is armed: this process stops itself at its first batch at this step", zap.String("step", string(at)))
	var once sync.Once
	return func(s poller.Step) {
		if s != at {
			return
		}
		once.Do(func() {
			log.Warn("test hook: stopping", zap.String("step", string(s)))
			_ = log.Sync()
			// A signal to oneself takes effect soon, not at once: wait
			// for the SIGCONT, or this goroutine could run on into the
			// next step before the process stops.
			cont := make(chan os.Signal, 1)
			signal.Notify(cont, syscall.SIGCONT)
			defer signal.Stop(cont)
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			<-cont
			log.Warn("test hook: resumed", zap.String("step", string(s)))
		})
	}
}
