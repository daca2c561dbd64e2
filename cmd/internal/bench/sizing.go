package bench

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// StoreSizing is what the checkpoint store holds at the end of a run, from
// Redis's own MEMORY USAGE of each key.
type StoreSizing struct {
	Records int64 `json:"records"`
	// RecordBytes is the shard's states and its small keys (meta, lease,
	// status); BytesPerRecord divides it by Records.
	RecordBytes    int64   `json:"recordBytes"`
	BytesPerRecord float64 `json:"bytesPerRecord"`
	// HistoryTransitions are the transitions the audit history holds;
	// BytesPerHistoryEntry divides its stream's memory by them.
	HistoryTransitions   int64   `json:"historyTransitions"`
	HistoryBytes         int64   `json:"historyBytes"`
	BytesPerHistoryEntry float64 `json:"bytesPerHistoryTransition"`
}

// redisSizing measures the keys under keyPrefix: the history stream apart,
// the rest per record.
func redisSizing(ctx context.Context, rdb *redis.Client, keyPrefix string) (StoreSizing, error) {
	var out StoreSizing
	iter := rdb.Scan(ctx, 0, keyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if err := out.add(ctx, rdb, iter.Val(), keyPrefix); err != nil {
			return out, err
		}
	}
	if err := iter.Err(); err != nil {
		return out, err
	}
	if out.Records > 0 {
		out.BytesPerRecord = float64(out.RecordBytes) / float64(out.Records)
	}
	if out.HistoryTransitions > 0 {
		out.BytesPerHistoryEntry = float64(out.HistoryBytes) / float64(out.HistoryTransitions)
	}
	return out, nil
}

// add counts a key: its memory, and the records or transitions it holds.
func (s *StoreSizing) add(ctx context.Context, rdb *redis.Client, key, keyPrefix string) error {
	bytes, err := rdb.MemoryUsage(ctx, key, 0).Result() // 0: every element, not a sample
	if err != nil {
		return err
	}
	switch kind, _, _ := strings.Cut(strings.TrimPrefix(key, keyPrefix), ":"); kind {
	case "history":
		s.HistoryBytes += bytes
	case "records":
		s.RecordBytes += bytes
		n, err := rdb.HLen(ctx, key).Result()
		if err != nil {
			return err
		}
		s.Records += n
	case "meta":
		s.RecordBytes += bytes
		n, err := rdb.HGet(ctx, key, "historyLen").Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		s.HistoryTransitions += n
	default:
		s.RecordBytes += bytes
	}
	return nil
}
