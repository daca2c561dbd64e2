package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/diff"
)

// RedisOptions configures a [Redis] store.
type RedisOptions struct {
	// KeyPrefix starts every key; default "capoller:".
	KeyPrefix string
	// HistoryMaxLen bounds each shard's history stream (approximate
	// trimming); default 1,000,000 entries, negative disables trimming.
	HistoryMaxLen int64
	// ChunkSize is the number of fields per HMGET; default 1000.
	ChunkSize int
}

// Redis keeps checkpoints in Redis:
//
//	<prefix>state:<source>:<region>    hash   record -> "status|repeats|observedAt"
//	<prefix>meta:<source>:<region>     hash   known, commits, committedAt
//	<prefix>history:<source>:<region>  stream one entry per transition, field "event" (JSON)
type Redis struct {
	client redis.UniversalClient
	opts   RedisOptions
	trips  atomic.Int64
}

// RoundTrips counts the requests this store sent to Redis (a pipeline or a
// transaction is one).
func (r *Redis) RoundTrips() int64 { return r.trips.Load() }

// NewRedis builds a Redis store on a client the caller owns.
func NewRedis(client redis.UniversalClient, opts RedisOptions) (*Redis, error) {
	if client == nil {
		return nil, errors.New("checkpoint: a redis client is required")
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "capoller:"
	}
	if opts.HistoryMaxLen == 0 {
		opts.HistoryMaxLen = 1_000_000
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = 1000
	}
	if opts.ChunkSize < 0 {
		return nil, fmt.Errorf("checkpoint: chunk size must be positive, got %d", opts.ChunkSize)
	}
	return &Redis{client: client, opts: opts}, nil
}

func (r *Redis) key(kind string, s diff.Shard) string {
	return r.opts.KeyPrefix + kind + ":" + string(s.Source) + ":" + s.Region
}

// Load returns the checkpointed states of keys, in one pipelined round trip.
func (r *Redis) Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error) {
	prev := diff.Previous{States: make(map[diff.Key]diff.State, len(keys))}
	stateKey := r.key("state", shard)
	pipe := r.client.Pipeline()
	known := pipe.HExists(ctx, r.key("meta", shard), "known")
	var gets []*redis.SliceCmd
	var chunks [][]diff.Key
	for start := 0; start < len(keys); start += r.opts.ChunkSize {
		chunk := keys[start:min(start+r.opts.ChunkSize, len(keys))]
		fields := make([]string, len(chunk))
		for i, k := range chunk {
			fields[i] = field(k)
		}
		gets = append(gets, pipe.HMGet(ctx, stateKey, fields...))
		chunks = append(chunks, chunk)
	}
	r.trips.Add(1)
	if _, err := pipe.Exec(ctx); err != nil {
		return prev, fmt.Errorf("checkpoint: load %s from redis: %w", shard, err)
	}
	prev.Known = known.Val()
	for i, get := range gets {
		for j, v := range get.Val() {
			s, ok := v.(string)
			if !ok {
				continue // never checkpointed
			}
			st, err := decodeState(s)
			if err != nil {
				return prev, fmt.Errorf("checkpoint: load %s record %s: %w", shard, field(chunks[i][j]), err)
			}
			prev.States[chunks[i][j]] = st
		}
	}
	return prev, nil
}

// Absent returns the checkpointed states of the shard's records for which
// seen is false: after a complete listing, the records the API no longer
// holds. It scans the hash in chunks, keeping only those records.
func (r *Redis) Absent(ctx context.Context, shard diff.Shard, seen func(diff.Key) bool) (map[diff.Key]diff.State, error) {
	out := map[diff.Key]diff.State{}
	var cursor uint64
	for {
		r.trips.Add(1)
		fields, next, err := r.client.HScan(ctx, r.key("state", shard), cursor, "", int64(r.opts.ChunkSize)).Result()
		if err != nil {
			return nil, fmt.Errorf("checkpoint: scan %s in redis: %w", shard, err)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			k := parseField(fields[i])
			if seen(k) {
				continue
			}
			st, err := decodeState(fields[i+1])
			if err != nil {
				return nil, fmt.Errorf("checkpoint: load %s record %s: %w", shard, fields[i], err)
			}
			out[k] = st
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// MarkKnown records that the shard's first listing was committed whole:
// from now on, a record seen for the first time is new, not baseline.
func (r *Redis) MarkKnown(ctx context.Context, shard diff.Shard) error {
	r.trips.Add(1)
	if err := r.client.HSet(ctx, r.key("meta", shard), "known", "1").Err(); err != nil {
		return fmt.Errorf("checkpoint: mark %s known in redis: %w", shard, err)
	}
	return nil
}

// Commit stores the new states and appends the transitions to the shard's
// history, atomically (MULTI/EXEC).
func (r *Redis) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error {
	r.trips.Add(1)
	_, err := r.client.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		if len(updates) > 0 {
			values := make([]any, 0, 2*len(updates))
			for _, u := range updates {
				values = append(values, field(u.Key), encodeState(u.State))
			}
			pipe.HSet(ctx, r.key("state", shard), values...)
		}
		for _, t := range transitions {
			entry, err := json.Marshal(historyEntry(t))
			if err != nil {
				return fmt.Errorf("encode history entry %s: %w", t.ID, err)
			}
			args := &redis.XAddArgs{Stream: r.key("history", shard), Values: []any{"event", entry}}
			if r.opts.HistoryMaxLen > 0 {
				args.MaxLen, args.Approx = r.opts.HistoryMaxLen, true
			}
			pipe.XAdd(ctx, args)
		}
		pipe.HSet(ctx, r.key("meta", shard), "committedAt", time.Now().UTC().Format(time.RFC3339Nano))
		pipe.HIncrBy(ctx, r.key("meta", shard), "commits", 1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("checkpoint: commit %s to redis: %w", shard, err)
	}
	return nil
}

// History returns up to count history entries of a shard, oldest first,
// starting after the stream id after ("" or "0" from the beginning). It
// returns the stream id of the last entry, to continue from.
func (r *Redis) History(ctx context.Context, shard diff.Shard, after string, count int64) ([]HistoryEntry, string, error) {
	if after == "" {
		after = "0"
	}
	msgs, err := r.client.XRangeN(ctx, r.key("history", shard), "("+after, "+", count).Result()
	if err != nil {
		return nil, after, fmt.Errorf("checkpoint: read %s history: %w", shard, err)
	}
	out := make([]HistoryEntry, 0, len(msgs))
	last := after
	for _, m := range msgs {
		raw, _ := m.Values["event"].(string)
		var e HistoryEntry
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			return out, last, fmt.Errorf("checkpoint: %s history entry %s: %w: %v", shard, m.ID, ErrCorrupt, err)
		}
		out = append(out, e)
		last = m.ID
	}
	return out, last, nil
}
