package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

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
	// Logger hears of records skipped while migrating from the first
	// encoding; default no-op.
	Logger *zap.Logger
}

// Redis keeps checkpoints in Redis. A shard's keys share the hash tag of
// its id, so that in a Redis Cluster each of its atomic writes stays in
// one slot:
//
//	<prefix>records:{<account>/<source>/<region>}  hash   record -> state (see codec.go)
//	<prefix>meta:{…}                              hash   known, commits, committedAt
//	<prefix>outbox:{…}                            string the batch being published, until it is committed
//	<prefix>history:{…}                           stream one entry per transition, field "event" (JSON)
//
// The default account's shards from before accounts
// (<prefix>records:<source>:<region> …, and the first encoding,
// <prefix>state:<source>:<region>) are moved the first time this process
// touches them.
type Redis struct {
	client redis.UniversalClient
	opts   RedisOptions
	trips  atomic.Int64

	mu       sync.Mutex
	migrated map[diff.Shard]bool
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
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ChunkSize < 0 {
		return nil, fmt.Errorf("checkpoint: chunk size must be positive, got %d", opts.ChunkSize)
	}
	if strings.ContainsAny(opts.KeyPrefix, "{}") {
		return nil, fmt.Errorf("checkpoint: key prefix %q holds a brace: it would break the hash tag that keeps each shard's keys in one Redis Cluster slot", opts.KeyPrefix)
	}
	return &Redis{client: client, opts: opts, migrated: map[diff.Shard]bool{}}, nil
}

func (r *Redis) key(kind string, s diff.Shard) string {
	return r.opts.KeyPrefix + kind + ":{" + s.String() + "}"
}

// legacyKey names a key of the default account's shard from before
// accounts.
func (r *Redis) legacyKey(kind string, s diff.Shard) string {
	return r.opts.KeyPrefix + kind + ":" + string(s.Source) + ":" + s.Region
}

// migrate brings a shard to the current layout, once per process. The
// default account's keys from before accounts are copied under their new
// names (DUMP and RESTORE, which work across Cluster slots), meta last,
// and the old ones deleted; interrupted, it is done again, for the new
// meta is what says it is done. A shard still in the first encoding is
// then re-encoded record by record, and the legacy hash dropped last.
func (r *Redis) migrate(ctx context.Context, shard diff.Shard) error {
	r.mu.Lock()
	done := r.migrated[shard]
	r.mu.Unlock()
	if done {
		return nil
	}
	if diff.AccountOf(shard.Account) == diff.DefaultAccount {
		if err := r.moveLegacyKeys(ctx, shard); err != nil {
			return fmt.Errorf("checkpoint: migrate %s in redis: %w", shard, err)
		}
	}
	legacy := r.legacyKey("state", shard)
	var cursor uint64
	for {
		r.trips.Add(1)
		fields, next, err := r.client.HScan(ctx, legacy, cursor, "", int64(r.opts.ChunkSize)).Result()
		if err != nil {
			return fmt.Errorf("checkpoint: migrate %s in redis: %w", shard, err)
		}
		values := make([]any, 0, len(fields))
		for i := 0; i+1 < len(fields); i += 2 {
			st, err := decodeLegacyState(fields[i+1], time.Now().UTC())
			if err != nil { // the first encoding could not hold it: let it be new rather than block the shard
				r.opts.Logger.Warn("skipping an undecodable record of the first encoding", zap.Stringer("shard", shard),
					zap.String("field", fields[i]), zap.Error(err))
				continue
			}
			values = append(values, encodeKey(decodeLegacyField(fields[i])), encodeState(st))
		}
		if len(values) > 0 {
			r.trips.Add(1)
			if err := r.client.HSet(ctx, r.key("records", shard), values...).Err(); err != nil {
				return fmt.Errorf("checkpoint: migrate %s in redis: %w", shard, err)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	r.trips.Add(1)
	if err := r.client.Del(ctx, legacy).Err(); err != nil {
		return fmt.Errorf("checkpoint: migrate %s in redis: %w", shard, err)
	}
	r.mu.Lock()
	r.migrated[shard] = true
	r.mu.Unlock()
	return nil
}

// moveLegacyKeys copies the keys a shard had before accounts under their
// current names, unless the shard has a current meta already, and deletes
// the old ones.
func (r *Redis) moveLegacyKeys(ctx context.Context, shard diff.Shard) error {
	r.trips.Add(1)
	n, err := r.client.Exists(ctx, r.key("meta", shard)).Result()
	if err != nil {
		return err
	}
	kinds := []string{"records", "outbox", "history", "meta"} // meta last: it marks the move done
	if n == 0 {
		for _, kind := range kinds {
			r.trips.Add(1)
			dump, err := r.client.Dump(ctx, r.legacyKey(kind, shard)).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return err
			}
			r.trips.Add(1)
			if err := r.client.RestoreReplace(ctx, r.key(kind, shard), 0, dump).Err(); err != nil {
				return err
			}
			r.opts.Logger.Info("moved a checkpoint key to the layout with accounts", zap.Stringer("shard", shard),
				zap.String("from", r.legacyKey(kind, shard)), zap.String("to", r.key(kind, shard)))
		}
	}
	for _, kind := range kinds { // one by one: in a Cluster they live in different slots
		r.trips.Add(1)
		if err := r.client.Del(ctx, r.legacyKey(kind, shard)).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Load returns the checkpointed states of keys, in one pipelined round trip.
func (r *Redis) Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error) {
	prev := diff.Previous{States: make(map[diff.Key]diff.State, len(keys))}
	if err := r.migrate(ctx, shard); err != nil {
		return prev, err
	}
	stateKey := r.key("records", shard)
	pipe := r.client.Pipeline()
	known := pipe.HExists(ctx, r.key("meta", shard), "known")
	var gets []*redis.SliceCmd
	var chunks [][]diff.Key
	for start := 0; start < len(keys); start += r.opts.ChunkSize {
		chunk := keys[start:min(start+r.opts.ChunkSize, len(keys))]
		fields := make([]string, len(chunk))
		for i, k := range chunk {
			fields[i] = encodeKey(k)
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
				return prev, fmt.Errorf("checkpoint: load %s record %q: %w", shard, encodeKey(chunks[i][j]), err)
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
	if err := r.migrate(ctx, shard); err != nil {
		return nil, err
	}
	out := map[diff.Key]diff.State{}
	var cursor uint64
	for {
		r.trips.Add(1)
		fields, next, err := r.client.HScan(ctx, r.key("records", shard), cursor, "", int64(r.opts.ChunkSize)).Result()
		if err != nil {
			return nil, fmt.Errorf("checkpoint: scan %s in redis: %w", shard, err)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			k, err := decodeKey(fields[i])
			if err != nil {
				return nil, fmt.Errorf("checkpoint: scan %s: %w", shard, err)
			}
			if seen(k) {
				continue
			}
			st, err := decodeState(fields[i+1])
			if err != nil {
				return nil, fmt.Errorf("checkpoint: load %s record %q: %w", shard, fields[i], err)
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

// Stage stores a batch about to be published, so that a failed commit or
// a crash after the publish is finished from it (see [Redis.Staged])
// rather than diffed again from older states. Committing clears it.
func (r *Redis) Stage(ctx context.Context, shard diff.Shard, batch diff.Result) error {
	r.trips.Add(1)
	if err := r.client.Set(ctx, r.key("outbox", shard), encodeBatch(batch), 0).Err(); err != nil {
		return fmt.Errorf("checkpoint: stage a batch of %s in redis: %w", shard, err)
	}
	return nil
}

// Staged returns the batch staged and not yet committed, if any.
func (r *Redis) Staged(ctx context.Context, shard diff.Shard) (diff.Result, bool, error) {
	r.trips.Add(1)
	raw, err := r.client.Get(ctx, r.key("outbox", shard)).Bytes()
	if errors.Is(err, redis.Nil) {
		return diff.Result{}, false, nil
	}
	if err != nil {
		return diff.Result{}, false, fmt.Errorf("checkpoint: read the staged batch of %s from redis: %w", shard, err)
	}
	batch, err := decodeBatch(raw)
	if err != nil {
		return diff.Result{}, false, fmt.Errorf("checkpoint: staged batch of %s: %w", shard, err)
	}
	return ofShard(batch, shard), true, nil
}

// Commit stores the new states, appends the transitions to the shard's
// history and clears the staged batch, atomically (MULTI/EXEC).
func (r *Redis) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error {
	r.trips.Add(1)
	_, err := r.client.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		values := make([]any, 0, 2*len(updates))
		var forget []string
		for _, u := range updates {
			if u.Forget {
				forget = append(forget, encodeKey(u.Key))
				continue
			}
			values = append(values, encodeKey(u.Key), encodeState(u.State))
		}
		if len(values) > 0 {
			pipe.HSet(ctx, r.key("records", shard), values...)
		}
		if len(forget) > 0 {
			pipe.HDel(ctx, r.key("records", shard), forget...)
		}
		pipe.Del(ctx, r.key("outbox", shard))
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
