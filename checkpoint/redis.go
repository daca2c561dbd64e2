package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	// HistoryMaxLen is how many transitions each shard's history keeps
	// at least, the oldest commits going first; default 1,000,000,
	// negative keeps any number.
	HistoryMaxLen int64
	// HistoryMaxAge is how long a commit stays in the history; default
	// 30 days (the API's own retention), negative keeps any age.
	HistoryMaxAge time.Duration
	// ChunkSize is the number of fields per HMGET; default 1000.
	ChunkSize int
	// Logger hears of records skipped while migrating from the first
	// encoding; default no-op.
	Logger *zap.Logger
	// ReplicaWait is how long a lease taken or renewed, a staged batch, a
	// commit or a known mark waits, once it ran on the master, for the
	// master's replicas to acknowledge it (WAIT; see redis_wait.go): one
	// that they do not all acknowledge in time fails with
	// [ErrNotReplicated]. A master without replicas is not waited for.
	// Default 1s; negative writes without waiting, and a failover may then
	// lose writes Redis acknowledged.
	ReplicaWait time.Duration
	// ReplicaGrace is how long a replica that the master no longer lists
	// online is still waited for (and so holds its writes up): a replica
	// that just left may be the one promoted. Default 15s, Redis Cluster's
	// default node timeout; negative waits only for the replicas listed
	// online at each write.
	ReplicaGrace time.Duration
}

// Redis keeps checkpoints in Redis. A shard's keys share the hash tag of
// its id, so that in a Redis Cluster each of its atomic writes stays in
// one slot:
//
//	<prefix>records:{<account>/<source>/<region>}  hash   record -> state (see codec.go)
//	<prefix>meta:{…}                              hash   known, commits, committedAt
//	<prefix>outbox:{…}                            string the batch being published, until it is committed
//	<prefix>history:{…}                           stream one entry per commit: its transitions (see commitScript)
//	<prefix>lease:{…}                             hash   the shard's lease (see lease_redis.go)
//	<prefix>status:{…}                            hash   the owner's last report of the shard
//	<prefix>group:members                         hash   replica id -> JSON member
//
// Commit, Stage and MarkKnown are each one Lua script: once a process has
// fenced a shard ([Redis.Fence]), the script compares the token in the
// shard's lease with the process's before it writes anything, so a stale
// owner's write is refused in the same atomic step that would have made
// it.
//
// The default account's shards from before accounts
// (<prefix>records:<source>:<region> …, and the first encoding,
// <prefix>state:<source>:<region>) are moved the first time this process
// touches them.
type Redis struct {
	client redis.UniversalClient
	opts   RedisOptions
	trips  atomic.Int64
	// unreplicated counts the writes that ran on a master but that its
	// replicas did not all acknowledge in time (ErrNotReplicated).
	unreplicated atomic.Int64

	scripts redisScripts
	seen    replicaSeen // the replicas each master listed, for WAIT
	configs *configs    // the group's configurations' lists, read once each

	mu       sync.Mutex
	migrated map[diff.Shard]bool
	fences   map[diff.Shard]uint64 // the token this process's writes of a shard carry; absent = unfenced
}

// redisScripts are the store's Lua scripts. They live on the store, not in
// package variables: a script caches its SHA once loaded.
type redisScripts struct {
	commit, stage, staged, discard     *redis.Script
	markKnown                          *redis.Script
	acquire, renew, release, heartbeat *redis.Script
	// source is each script's text, for EVAL on a node that lacks it.
	source map[*redis.Script]string
}

func newRedisScripts() redisScripts {
	s := redisScripts{source: map[*redis.Script]string{}}
	for _, def := range []struct {
		to  **redis.Script
		src string
	}{
		{&s.commit, commitScript}, {&s.stage, stageScript}, {&s.staged, stagedScript}, {&s.discard, discardScript}, {&s.markKnown, markKnownScript},
		{&s.acquire, acquireScript}, {&s.renew, renewScript}, {&s.release, releaseScript}, {&s.heartbeat, heartbeatScript},
	} {
		*def.to = redis.NewScript(def.src)
		s.source[*def.to] = def.src
	}
	return s
}

// fenceCheck starts every script that writes a shard: KEYS[1] is the
// shard's lease and ARGV[1] the writer's token, "0" when unfenced. A
// refused write returns {0, the lease's token}.
const fenceCheck = `
if ARGV[1] ~= '0' then
  local current = redis.call('HGET', KEYS[1], 'token')
  if current ~= ARGV[1] then
    return {0, current or '0'}
  end
end
`

// commitScript: KEYS lease, records, staged, history, meta, outbox; ARGV
// token, the history's retention in transitions ("0": by count none),
// committedAt, the number of field/state pairs, the number of fields to
// forget, whether a staged batch is committed ("1": the oldest is
// popped), the history entry ("": none), its number of transitions, the
// oldest stream id the history keeps by age ("": none), then the pairs
// and the fields. Values are passed to HSET and HDEL 2000 at a time (an
// even number: pairs stay whole): unpack() puts them on Lua's C stack,
// which takes a few thousand at most, and a baseline commits 100,000
// records at once.
//
// The history holds one entry per commit: "batch" (its transitions,
// binary, see encodeBatch) and "n" (how many). An entry written by an
// earlier version, "event" (one JSON transition), counts 1. The meta's
// historyLen is the number of transitions the stream holds (counted again
// if it is missing, and zero if the stream is); entries are
// deleted from the oldest while they are older than the age limit or the
// rest still holds the count, at most 1000 a commit, so that one commit
// after a long pause stays short (the next ones finish the trimming).
const commitScript = fenceCheck + `
local chunk = 2000
local nset, nforget = tonumber(ARGV[4]), tonumber(ARGV[5])
local i = 10
local last = 9 + 2 * nset
while i <= last do
  local j = math.min(i + chunk - 1, last)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
last = last + nforget
while i <= last do
  local j = math.min(i + chunk - 1, last)
  redis.call('HDEL', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
if ARGV[6] == '1' then -- the commit of a staged batch: the oldest
  if redis.call('EXISTS', KEYS[6]) == 1 then
    redis.call('DEL', KEYS[6]) -- staged by a version that held one batch
  else
    redis.call('LPOP', KEYS[3])
  end
end
local function transitions(entry) -- of a history entry: its n, or 1 (one JSON transition)
  local f = entry[2]
  for x = 1, #f - 1, 2 do
    if f[x] == 'n' then return tonumber(f[x + 1]) or 1 end
  end
  return 1
end
if ARGV[7] ~= '' then
  local total = tonumber(redis.call('HGET', KEYS[5], 'historyLen'))
  if redis.call('EXISTS', KEYS[4]) == 0 then
    total = 0 -- a history deleted by hand, or never written
  elseif not total then -- a meta lost, or written by a version without it: count
    total = 0
    local from = '-'
    repeat
      local page = redis.call('XRANGE', KEYS[4], from, '+', 'COUNT', 1000)
      for _, e in ipairs(page) do total = total + transitions(e) end
      if #page > 0 then from = '(' .. page[#page][1] end
    until #page < 1000
  end
  local added = redis.call('XADD', KEYS[4], '*', 'batch', ARGV[7], 'n', ARGV[8])
  total = total + tonumber(ARGV[8])
  local keep, minMs = tonumber(ARGV[2]), tonumber(ARGV[9])
  for _ = 1, 1000 do
    local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
    if not oldest or oldest[1] == added then break end -- never this commit's own
    local n = transitions(oldest)
    local old = minMs and tonumber(string.match(oldest[1], '^%d+')) < minMs
    if not old and not (keep > 0 and total - n >= keep) then break end
    redis.call('XDEL', KEYS[4], oldest[1])
    total = total - n
  end
  redis.call('HSET', KEYS[5], 'historyLen', math.max(total, 0))
end
redis.call('HSET', KEYS[5], 'committedAt', ARGV[3])
redis.call('HINCRBY', KEYS[5], 'commits', 1)
return {1}
`

// The staged batches are a list, staged:{…}, oldest first. A batch staged
// by a version that held one, the string outbox:{…}, is older than any in
// the list; that version never reads the list, so a rollback finds no
// type it cannot read (its batches queued here are diffed again).

// stageScript: KEYS lease, staged, outbox; ARGV token, the encoded batch
// or "" to clear every staged batch.
const stageScript = fenceCheck + `
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2], KEYS[3])
  return {1}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return {1}
`

// stagedScript: KEYS staged, outbox, and meta when it is a barrier; ARGV
// the time (Unix ms) when it is. The oldest staged batch, or false. As a
// barrier it writes the time of the read in meta's stagedReadAt, so that
// a WAIT after it covers every write the master holds (see Staged).
const stagedScript = `
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'stagedReadAt', ARGV[1])
end
local old = redis.call('GET', KEYS[2])
if old then
  return old
end
return redis.call('LINDEX', KEYS[1], 0)
`

// discardScript: KEYS lease, staged, outbox; ARGV token. Drops the oldest
// staged batch only.
const discardScript = fenceCheck + `
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[3])
else
  redis.call('LPOP', KEYS[2])
end
return {1}
`

// markKnownScript: KEYS lease, meta; ARGV token.
const markKnownScript = fenceCheck + `
redis.call('HSET', KEYS[2], 'known', '1')
return {1}
`

// Fence makes this process's later commits, staged batches and known
// marks of shard carry token, and be refused with [ErrFenced] once the
// shard's lease has another token (a newer owner acquired it). Token 0
// writes unfenced.
func (r *Redis) Fence(shard diff.Shard, token uint64) {
	shard = shard.Canonical()
	r.mu.Lock()
	defer r.mu.Unlock()
	if token == 0 {
		delete(r.fences, shard)
		return
	}
	r.fences[shard] = token
}

// token is the fencing token this process's writes of shard carry.
func (r *Redis) token(shard diff.Shard) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fences[shard]
}

// write runs one of the scripts that write a shard (see fenceCheck): the
// first key is always the shard's lease, which shares the shard's hash tag.
// It runs once, on the master of the shard's slot, and succeeds only once
// the master's replicas have it (see [Redis.exec]).
func (r *Redis) write(ctx context.Context, script *redis.Script, shard diff.Shard, what string, keys []string, args ...any) error {
	token := r.token(shard)
	rep, err := r.exec(ctx, script, append([]string{r.key("lease", shard)}, keys...),
		append([]any{strconv.FormatUint(token, 10)}, args...)...)
	if err != nil {
		return fmt.Errorf("checkpoint: %s %s in redis: %w", what, shard, err)
	}
	reply, _ := rep.val.([]any)
	if len(reply) > 0 && reply[0] == int64(1) {
		if rep.replicated != nil {
			return fmt.Errorf("checkpoint: %s %s in redis: %w", what, shard, rep.replicated)
		}
		return nil
	}
	current := "?"
	if len(reply) > 1 {
		current = fmt.Sprint(reply[1])
	}
	return fmt.Errorf("checkpoint: %s %s in redis: %w (the lease's token is %s, this process's %d)", what, shard, ErrFenced, current, token)
}

// Ping says whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("checkpoint: redis: %w", err)
	}
	return nil
}

// RoundTrips counts the requests this store sent to Redis (a pipeline or a
// transaction is one).
func (r *Redis) RoundTrips() int64 { return r.trips.Load() }

// Unreplicated counts the writes that ran on a master but that its
// replicas did not all acknowledge within ReplicaWait: each failed with
// ErrNotReplicated, and was retried by its caller.
func (r *Redis) Unreplicated() int64 { return r.unreplicated.Load() }

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
	if opts.HistoryMaxAge == 0 {
		opts.HistoryMaxAge = 30 * 24 * time.Hour
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = 1000
	}
	if opts.ReplicaWait == 0 {
		opts.ReplicaWait = time.Second
	}
	if opts.ReplicaGrace == 0 {
		opts.ReplicaGrace = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ChunkSize < 0 {
		return nil, fmt.Errorf("checkpoint: chunk size must be positive, got %d", opts.ChunkSize)
	}
	if opts.ReplicaWait > 0 && opts.ReplicaWait < time.Millisecond {
		return nil, fmt.Errorf("checkpoint: the replica wait must be at least a millisecond (WAIT counts in milliseconds, and 0 would block for ever), got %v", opts.ReplicaWait)
	}
	if strings.ContainsAny(opts.KeyPrefix, "{}") {
		return nil, fmt.Errorf("checkpoint: key prefix %q holds a brace: it would break the hash tag that keeps each shard's keys in one Redis Cluster slot", opts.KeyPrefix)
	}
	return &Redis{client: client, opts: opts, scripts: newRedisScripts(), configs: newConfigs(), migrated: map[diff.Shard]bool{}, fences: map[diff.Shard]uint64{}}, nil
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
			// HSETNX: never over a record already in the current encoding.
			// A replica paused mid-migration, whose lease a newer owner
			// took meanwhile, must not write old states back over the new
			// owner's commits.
			r.trips.Add(1)
			if _, err := r.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for i := 0; i+1 < len(values); i += 2 {
					pipe.HSetNX(ctx, r.key("records", shard), values[i].(string), values[i+1])
				}
				return nil
			}); err != nil {
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
			// RESTORE without REPLACE: a key already there was moved (by an
			// interrupted move, or by a newer owner while this replica was
			// paused here) and may hold newer commits.
			if err := r.client.Restore(ctx, r.key(kind, shard), 0, dump).Err(); err != nil {
				if strings.Contains(err.Error(), "BUSYKEY") {
					continue
				}
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
	shard = shard.Canonical()
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
	shard = shard.Canonical()
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
	shard = shard.Canonical()
	return r.write(ctx, r.scripts.markKnown, shard, "mark known", []string{r.key("meta", shard)})
}

// Stage stores a batch about to be published, so that a failed commit or
// a crash after the publish is finished from it (see [Redis.Staged])
// rather than diffed again from older states. Batches queue up, oldest
// first, up to [Redis.MaxStaged] of them: committing a batch with events
// clears the oldest. Staging an empty batch clears them all.
func (r *Redis) Stage(ctx context.Context, shard diff.Shard, batch diff.Result) error {
	shard = shard.Canonical()
	value := ""
	if len(batch.Transitions) > 0 || len(batch.Updates) > 0 {
		value = string(encodeBatch(batch))
	}
	return r.write(ctx, r.scripts.stage, shard, "stage a batch of", []string{r.key("staged", shard), r.key("outbox", shard)}, value)
}

// DiscardOldestStaged drops the oldest staged batch only: one that cannot
// be decoded, while the valid ones queued behind it are kept.
func (r *Redis) DiscardOldestStaged(ctx context.Context, shard diff.Shard) error {
	shard = shard.Canonical()
	return r.write(ctx, r.scripts.discard, shard, "discard a staged batch of", []string{r.key("staged", shard), r.key("outbox", shard)})
}

// MaxBatch is the events a poller publishes and commits as one batch:
// fewer, larger scripts cost Redis and the poller less per event, and a
// batch of 1000 is a few hundred kilobytes.
func (r *Redis) MaxBatch() int { return 1000 }

// MaxStaged is how many batches may be staged at once: a poller publishes
// the next batch while the previous one commits.
func (r *Redis) MaxStaged() int { return 4 }

// Staged returns the oldest batch staged and not yet committed, if any.
//
// A poller reads it first in a cycle after a failure (and in an owner's
// first cycle), and publishes what it finds; then it reads the shard's
// states and diffs. Either may be a write that ran on the master but that
// its replicas never acknowledged (the failure may be that one): a
// failover would lose it after it was acted on. So, unless ReplicaWait is
// negative, the read is a barrier: it writes a mark in the shard's meta
// and waits, like any write, until the replicas have it, and so every
// write before it, and it fails with ErrNotReplicated otherwise. A cycle
// that follows a successful one reads only what that cycle's own
// acknowledged writes left.
func (r *Redis) Staged(ctx context.Context, shard diff.Shard) (diff.Result, bool, error) {
	shard = shard.Canonical()
	var raw string
	if r.opts.ReplicaWait > 0 {
		rep, err := r.exec(ctx, r.scripts.staged, []string{r.key("staged", shard), r.key("outbox", shard), r.key("meta", shard)}, unixMs(time.Now()))
		if err == nil {
			err = rep.replicated
		}
		if err != nil {
			return diff.Result{}, false, fmt.Errorf("checkpoint: read the staged batch of %s from redis: %w", shard, err)
		}
		if rep.val == nil {
			return diff.Result{}, false, nil
		}
		raw, _ = rep.val.(string)
	} else {
		r.trips.Add(1)
		var err error
		raw, err = r.scripts.staged.Run(ctx, r.client, []string{r.key("staged", shard), r.key("outbox", shard)}).Text()
		if errors.Is(err, redis.Nil) {
			return diff.Result{}, false, nil
		}
		if err != nil {
			return diff.Result{}, false, fmt.Errorf("checkpoint: read the staged batch of %s from redis: %w", shard, err)
		}
	}
	batch, err := decodeBatch([]byte(raw))
	if err != nil {
		return diff.Result{}, false, fmt.Errorf("checkpoint: staged batch of %s: %w", shard, err)
	}
	return ofShard(batch, shard), true, nil
}

// Commit stores the new states, appends the transitions to the shard's
// history and, if there are transitions, clears the oldest staged batch
// (theirs), atomically, in one script and one round trip.
func (r *Redis) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error {
	shard = shard.Canonical()
	set := make([]any, 0, 2*len(updates))
	var forget []any
	for _, u := range updates {
		if u.Forget {
			forget = append(forget, encodeKey(u.Key))
			continue
		}
		set = append(set, encodeKey(u.Key), encodeState(u.State))
	}
	var entry any = "" // only a batch with events is staged, and is history
	pop, minID := "0", ""
	if len(transitions) > 0 {
		pop, entry = "1", encodeHistory(transitions)
		if r.opts.HistoryMaxAge > 0 {
			minID = strconv.FormatInt(time.Now().Add(-r.opts.HistoryMaxAge).UnixMilli(), 10)
		}
	}
	args := make([]any, 0, 9+len(set)+len(forget))
	args = append(args, max(r.opts.HistoryMaxLen, 0), time.Now().UTC().Format(time.RFC3339Nano), len(set)/2, len(forget),
		pop, entry, len(transitions), minID)
	args = append(append(args, set...), forget...)
	keys := []string{r.key("records", shard), r.key("staged", shard), r.key("history", shard), r.key("meta", shard), r.key("outbox", shard)}
	return r.write(ctx, r.scripts.commit, shard, "commit", keys, args...)
}

// HistoryCommit is one commit in a shard's history: its stream id (which
// starts with the commit's time in Unix milliseconds), that time, and the
// transitions it committed, in order.
type HistoryCommit struct {
	ID          string
	At          time.Time
	Transitions []diff.Transition
}

// Commits returns up to count commits of a shard's history, oldest first,
// after the stream id after ("" or "0": from the beginning; a bare Unix
// millisecond time: from that time on).
func (r *Redis) Commits(ctx context.Context, shard diff.Shard, after string, count int64) ([]HistoryCommit, error) {
	shard = shard.Canonical()
	start := "-"
	switch {
	case after == "" || after == "0":
	case strings.Contains(after, "-"):
		start = "(" + after
	default:
		start = after // a time: the commits from then on
	}
	msgs, err := r.client.XRangeN(ctx, r.key("history", shard), start, "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read %s history: %w", shard, err)
	}
	out := make([]HistoryCommit, 0, len(msgs))
	for _, m := range msgs {
		ts, err := historyTransitions(m.Values)
		if err != nil {
			return out, fmt.Errorf("checkpoint: %s history entry %s: %w", shard, m.ID, err)
		}
		for i := range ts {
			ts[i].Account = diff.AccountOf(shard.Account)
		}
		c := HistoryCommit{ID: m.ID, Transitions: ts}
		if ms, _, ok := strings.Cut(m.ID, "-"); ok {
			if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
				c.At = time.UnixMilli(n).UTC()
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// History returns the transitions of up to count commits of a shard,
// oldest first, after the stream id after ("" or "0" from the
// beginning), and the stream id of the last commit read, to continue
// from.
func (r *Redis) History(ctx context.Context, shard diff.Shard, after string, count int64) ([]diff.Transition, string, error) {
	commits, err := r.Commits(ctx, shard, after, count)
	last := after
	var out []diff.Transition
	for _, c := range commits {
		out = append(out, c.Transitions...)
		last = c.ID
	}
	return out, last, err
}

// HistoryShards lists the shards that have a history in this store,
// whether or not a poller runs them still, in the order of their ids.
func (r *Redis) HistoryShards(ctx context.Context) ([]diff.Shard, error) {
	pattern := r.opts.KeyPrefix + "history:{*}"
	var mu sync.Mutex
	found := map[diff.Shard]bool{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			id := strings.TrimSuffix(strings.TrimPrefix(iter.Val(), r.opts.KeyPrefix+"history:{"), "}")
			parts := strings.Split(id, "/")
			if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
				continue // not a shard's (another tool's key under the prefix)
			}
			mu.Lock()
			found[diff.Shard{Account: parts[0], Source: diff.Source(parts[1]), Region: parts[2]}] = true
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cluster, ok := r.client.(*redis.ClusterClient); ok {
		err = cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, r.client)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list the shards with a history: %w", err)
	}
	out := make([]diff.Shard, 0, len(found))
	for s := range found {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b diff.Shard) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}
