package main

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// What the bench and chaos harnesses share.

// deleteRun deletes what a harness run wrote: its stream, and every Redis
// key under its prefix (when rdb is set).
func deleteRun(ctx context.Context, js jetstream.JetStream, stream string, rdb *redis.Client, keyPrefix string) {
	_ = js.DeleteStream(ctx, stream)
	if rdb == nil {
		return
	}
	iter := rdb.Scan(ctx, 0, keyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
