package main

import (
	"context"
	"fmt"
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
	poller.GroupReader
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
