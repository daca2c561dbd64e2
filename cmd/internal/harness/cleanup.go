package harness

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// Leftovers is what a harness run wrote, for Clean to delete.
type Leftovers struct {
	JetStream jetstream.JetStream
	Stream    string
	// Bucket is a KV bucket of the run (checkpoints in JetStream KV);
	// empty: none.
	Bucket string
	// Redis holds the run's keys, under KeyPrefix; nil: none to delete
	// (the harness's own redis-server goes away with its directory).
	Redis     *redis.Client
	KeyPrefix string
}

// Clean deletes the leftovers, within 30 seconds of its own: a run ends
// by its context being cancelled as often as not.
func Clean(l Leftovers) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.Bucket != "" {
		_ = l.JetStream.DeleteKeyValue(ctx, l.Bucket)
	}
	_ = l.JetStream.DeleteStream(ctx, l.Stream)
	if l.Redis == nil {
		return
	}
	iter := l.Redis.Scan(ctx, 0, l.KeyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		l.Redis.Del(ctx, iter.Val())
	}
}
