package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/diff"
)

// A shard's lease is the hash <prefix>lease:{<id>}, with the shard's hash
// tag so that the scripts that write the shard can read it in their slot:
//
//	owner     the replica holding it, "" once released
//	token     the fencing token; never deleted, so it only grows
//	acquired  renewed  expires   Unix milliseconds, 0 once released
//
// Every operation is one script, so that reading the lease and deciding
// on it is one atomic step however many replicas race.

// leaseFields is the order in which the scripts read and return a lease.
const leaseFields = `'owner', 'token', 'acquired', 'renewed', 'expires'`

// acquireScript: KEYS lease; ARGV owner, now, now+ttl (Unix ms). It
// returns {1 or 0 (held by another), owner, token, acquired, renewed,
// expires}. A new token is the last one plus one, and at least now in
// milliseconds: should the lease hash be lost (deleted by hand, a flushed
// database, a failover that lost the last write), tokens still grow, and
// an old owner's cannot come back.
const acquireScript = `
local l = redis.call('HMGET', KEYS[1], ` + leaseFields + `)
local owner = l[1] or ''
local now = tonumber(ARGV[2])
if owner ~= '' and now < (tonumber(l[5]) or 0) then
  if owner ~= ARGV[1] then
    return {0, owner, l[2] or '0', l[3] or '0', l[4] or '0', l[5] or '0'}
  end
  redis.call('HSET', KEYS[1], 'renewed', ARGV[2], 'expires', ARGV[3])
  return {1, owner, l[2], l[3] or '0', ARGV[2], ARGV[3]}
end
local token = string.format('%.0f', math.max((tonumber(l[2]) or 0) + 1, now))
redis.call('HSET', KEYS[1], 'token', token, 'owner', ARGV[1], 'acquired', ARGV[2], 'renewed', ARGV[2], 'expires', ARGV[3])
return {1, ARGV[1], token, ARGV[2], ARGV[2], ARGV[3]}
`

// renewScript: KEYS lease; ARGV owner, token, now, now+ttl. It returns
// {1 or 0 (lost), and the lease as acquireScript does}.
const renewScript = `
local l = redis.call('HMGET', KEYS[1], ` + leaseFields + `)
if ARGV[1] == '' or l[1] ~= ARGV[1] or l[2] ~= ARGV[2] then
  return {0, l[1] or '', l[2] or '0', l[3] or '0', l[4] or '0', l[5] or '0'}
end
redis.call('HSET', KEYS[1], 'renewed', ARGV[3], 'expires', ARGV[4])
return {1, l[1], l[2], l[3] or '0', ARGV[3], ARGV[4]}
`

// releaseScript: KEYS lease; ARGV owner, token. The token stays.
const releaseScript = `
local l = redis.call('HMGET', KEYS[1], 'owner', 'token')
if ARGV[1] ~= '' and l[1] == ARGV[1] and l[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'owner', '', 'acquired', '0', 'renewed', '0', 'expires', '0')
end
return 1
`

// heartbeatScript: KEYS members, listed, configs; ARGV id, member (JSON,
// see memberRecord), now, "1" to keep the Started recorded before, the
// time before which a configuration is forgotten, the digest of the
// member's configuration ("" for none), and its list ("" when the store
// has it). It records the configuration as listed now by the member,
// prunes members whose heartbeat expired at now (and any it cannot read:
// none of this version's heartbeats is) and configurations listed by
// nobody since the forgetting time, with their lists, and returns {live
// members, {digest, stamp, …}, the store's time in Unix ms, 1 if it has
// the member's list}.
const heartbeatScript = `
local entry = ARGV[2]
if ARGV[4] == '1' then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  if old then
    local ok, o = pcall(cjson.decode, old)
    if ok and type(o) == 'table' and type(o.started) == 'number' then
      local m = cjson.decode(entry)
      m.started = o.started
      entry = cjson.encode(m)
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], entry)
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local ok, m = pcall(cjson.decode, all[i + 1])
  if ok and type(m) == 'table' and type(m.expires) == 'number' and m.expires > now then
    live[#live + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local held = 0
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[6], ARGV[3] .. '|' .. ARGV[1])
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
  end
  held = redis.call('HEXISTS', KEYS[3], ARGV[6])
end
local forget = tonumber(ARGV[5])
local reg = redis.call('HGETALL', KEYS[2])
local listed = {}
for i = 1, #reg, 2 do
  local at = tonumber(string.match(reg[i + 1], '^(%d+)|'))
  if at and at >= forget then
    listed[#listed + 1] = reg[i]
    listed[#listed + 1] = reg[i + 1]
  else
    redis.call('HDEL', KEYS[2], reg[i])
    redis.call('HDEL', KEYS[3], reg[i])
  end
end
local t = redis.call('TIME')
return {live, listed, t[1] * 1000 + math.floor(t[2] / 1000), held}
`

func (r *Redis) membersKey() string { return r.opts.KeyPrefix + "group:members" }

// listedKey is the hash of configuration digest -> "<Unix ms>|<member>"
// of the last heartbeat that listed each, and configsKey that of digest
// -> the configuration's shard ids (a JSON array). Their hash tag is the
// members key (which has no braces: a key prefix has none), so that in a
// Redis Cluster the three live in one slot, and one script writes them.
func (r *Redis) listedKey() string  { return "{" + r.membersKey() + "}listed" }
func (r *Redis) configsKey() string { return "{" + r.membersKey() + "}configs" }

// Heartbeat registers or renews m, records its configuration as listed,
// prunes the members whose heartbeat expired at now and the
// configurations listed by nobody for ListedMemory, and returns the
// roster.
func (r *Redis) Heartbeat(ctx context.Context, m Member, ttl time.Duration, now time.Time) (Roster, error) {
	if m.ID == "" {
		return Roster{}, errors.New("checkpoint: a member needs an id")
	}
	if err := checkTTL(ttl); err != nil {
		return Roster{}, err
	}
	keep := "0"
	if m.Started.IsZero() {
		keep = "1"
	}
	rec := recordOf(heartbeatOf(m, ttl, now))
	entry, err := json.Marshal(rec)
	if err != nil {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s: %w", m.ID, err)
	}
	digest, list := "", ""
	if rec.Listing {
		digest = rec.Shards
		if r.configs.own(digest, m.Lists) {
			list = string(listIDs(m.Lists))
		}
	}
	r.trips.Add(1)
	raw, err := r.scripts.heartbeat.Run(ctx, r.client, []string{r.membersKey(), r.listedKey(), r.configsKey()},
		m.ID, entry, unixMs(now), keep, unixMs(now.Add(-ListedMemory)), digest, list).Slice()
	if err != nil {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s in redis: %w", m.ID, err)
	}
	if len(raw) != 4 {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s: %w: the script returned %d values", m.ID, ErrCorrupt, len(raw))
	}
	if digest != "" {
		r.configs.storedAs(digest, raw[3] == int64(1))
	}
	live, _ := raw[0].([]any)
	var records []memberRecord
	for _, v := range live {
		s, _ := v.(string)
		if rec, ok := decodeMember([]byte(s)); ok {
			records = append(records, rec)
		}
	}
	flat, _ := raw[1].([]any)
	listed := map[string]string{}
	for i := 0; i+1 < len(flat); i += 2 {
		d, _ := flat[i].(string)
		listed[d], _ = flat[i+1].(string)
	}
	used := usedConfigs(records, listed, digest)
	r.configs.keep(used)
	if err := r.readConfigs(ctx, used); err != nil {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s: %w", m.ID, err)
	}
	roster := r.configs.roster(records, listed)
	if ms, ok := raw[2].(int64); ok {
		roster.Now = time.UnixMilli(ms).UTC()
	}
	return roster, nil
}

// readConfigs reads the lists of digests that are not cached yet, in
// one round trip.
func (r *Redis) readConfigs(ctx context.Context, digests []string) error {
	missing := r.configs.missing(digests)
	if len(missing) == 0 {
		return nil
	}
	r.trips.Add(1)
	values, err := r.client.HMGet(ctx, r.configsKey(), missing...).Result()
	if err != nil {
		return fmt.Errorf("read the group's configurations from redis: %w", err)
	}
	for i, v := range values {
		if s, ok := v.(string); ok {
			r.configs.put(missing[i], []byte(s))
		}
	}
	return nil
}

// Listed returns the shards a configuration listed since now minus
// ListedMemory; it writes nothing.
func (r *Redis) Listed(ctx context.Context, now time.Time) ([]ListedShard, error) {
	r.trips.Add(1)
	all, err := r.client.HGetAll(ctx, r.listedKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read the listed shards from redis: %w", err)
	}
	maps.DeleteFunc(all, func(_, stamp string) bool {
		at, _, ok := parseStamp(stamp)
		return !ok || at.Before(now.Add(-ListedMemory))
	})
	if err := r.readConfigs(ctx, usedConfigs(nil, all, "")); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return r.configs.listedShards(all), nil
}

// Leave removes the member at once.
func (r *Redis) Leave(ctx context.Context, id string) error {
	r.trips.Add(1)
	if err := r.client.HDel(ctx, r.membersKey(), id).Err(); err != nil {
		return fmt.Errorf("checkpoint: leave of %s in redis: %w", id, err)
	}
	return nil
}

// Acquire takes the shard's lease for owner (see [Leases]).
func (r *Redis) Acquire(ctx context.Context, shard diff.Shard, owner string, ttl time.Duration, now time.Time) (Lease, error) {
	shard = shard.Canonical()
	if owner == "" {
		return Lease{Shard: shard}, errors.New("checkpoint: a lease needs an owner")
	}
	if err := checkTTL(ttl); err != nil {
		return Lease{Shard: shard}, err
	}
	l, ok, err := r.runLease(ctx, r.scripts.acquire, shard, owner, unixMs(now), unixMs(now.Add(ttl)))
	if err != nil {
		return l, fmt.Errorf("checkpoint: acquire %s in redis: %w", shard, err)
	}
	if !ok {
		return l, fmt.Errorf("checkpoint: acquire %s: %w (by %s until %s)", shard, ErrLeaseHeld, l.Owner, l.Expires.Format(time.RFC3339Nano))
	}
	return l, nil
}

// Renew extends the caller's lease (see [Leases]).
func (r *Redis) Renew(ctx context.Context, l Lease, ttl time.Duration, now time.Time) (Lease, error) {
	l.Shard = l.Shard.Canonical()
	if err := checkTTL(ttl); err != nil {
		return l, err
	}
	cur, ok, err := r.runLease(ctx, r.scripts.renew, l.Shard, l.Owner, l.Token, unixMs(now), unixMs(now.Add(ttl)))
	if err != nil {
		return l, fmt.Errorf("checkpoint: renew %s in redis: %w", l.Shard, err)
	}
	if !ok {
		return cur, fmt.Errorf("checkpoint: renew %s with token %d: %w (the shard's is %d)", l.Shard, l.Token, ErrLeaseLost, cur.Token)
	}
	return cur, nil
}

// Release gives the lease up at once, keeping its token.
func (r *Redis) Release(ctx context.Context, l Lease) error {
	l.Shard = l.Shard.Canonical()
	r.trips.Add(1)
	if err := r.scripts.release.Run(ctx, r.client, []string{r.key("lease", l.Shard)}, l.Owner, l.Token).Err(); err != nil {
		return fmt.Errorf("checkpoint: release %s in redis: %w", l.Shard, err)
	}
	return nil
}

// runLease runs a script that returns {ok, lease fields…}, once, on the
// master of the shard's slot. A lease taken or renewed counts only once
// the master's replicas have it (see [Redis.exec]): a failover that lost
// it could give a second owner the same token, or end the lease before
// the claim on it. A refusal (held, lost) stands however it was read.
func (r *Redis) runLease(ctx context.Context, script *redis.Script, shard diff.Shard, args ...any) (Lease, bool, error) {
	rep, err := r.exec(ctx, script, []string{r.key("lease", shard)}, args...)
	if err != nil {
		return Lease{Shard: shard}, false, err
	}
	reply, _ := rep.val.([]any)
	if len(reply) != 6 {
		return Lease{Shard: shard}, false, fmt.Errorf("%w: a lease script returned %d values", ErrCorrupt, len(reply))
	}
	l, err := leaseOf(shard, reply[1:])
	ok := reply[0] == int64(1)
	if err == nil && ok && rep.replicated != nil {
		return l, false, rep.replicated
	}
	return l, ok, err
}

// Leases returns the leases of shards, in one pipelined round trip.
func (r *Redis) Leases(ctx context.Context, shards []diff.Shard) ([]Lease, error) {
	shards = diff.Canonical(shards)
	if len(shards) == 0 {
		return nil, nil
	}
	pipe := r.client.Pipeline()
	gets := make([]*redis.SliceCmd, len(shards))
	for i, s := range shards {
		gets[i] = pipe.HMGet(ctx, r.key("lease", s), "owner", "token", "acquired", "renewed", "expires")
	}
	r.trips.Add(1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("checkpoint: read leases from redis: %w", err)
	}
	out := make([]Lease, len(shards))
	for i, get := range gets {
		l, err := leaseOf(shards[i], get.Val())
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

// leaseOf reads owner, token, acquired, renewed and expires, each a
// string (or nil, for a lease never taken).
func leaseOf(shard diff.Shard, v []any) (Lease, error) {
	n := make([]int64, 4)
	for i := range n {
		s, _ := v[i+1].(string)
		if s == "" {
			continue
		}
		var err error
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil || n[i] < 0 {
			return Lease{Shard: shard}, fmt.Errorf("checkpoint: lease of %s: %w: %q", shard, ErrCorrupt, s)
		}
	}
	owner, _ := v[0].(string)
	return Lease{Shard: shard, Owner: owner, Token: uint64(n[0]), Acquired: msTime(n[1]), Renewed: msTime(n[2]), Expires: msTime(n[3])}, nil
}

// Report records the shard's status in <prefix>status:{<id>}: one HSET,
// which leaves the last success alone when s has none.
func (r *Redis) Report(ctx context.Context, s ShardStatus) error {
	s.Shard = s.Shard.Canonical()
	values := []any{"replica", s.Replica, "lastCycle", unixMs(s.LastCycle), "lastError", s.LastError}
	if !s.LastSuccess.IsZero() {
		values = append(values, "lastSuccess", unixMs(s.LastSuccess))
	}
	r.trips.Add(1)
	if err := r.client.HSet(ctx, r.key("status", s.Shard), values...).Err(); err != nil {
		return fmt.Errorf("checkpoint: report the status of %s to redis: %w", s.Shard, err)
	}
	return nil
}

// Statuses returns the shards' last reports, in one pipelined round trip.
func (r *Redis) Statuses(ctx context.Context, shards []diff.Shard) ([]ShardStatus, error) {
	shards = diff.Canonical(shards)
	if len(shards) == 0 {
		return nil, nil
	}
	pipe := r.client.Pipeline()
	gets := make([]*redis.MapStringStringCmd, len(shards))
	for i, s := range shards {
		gets[i] = pipe.HGetAll(ctx, r.key("status", s))
	}
	r.trips.Add(1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("checkpoint: read statuses from redis: %w", err)
	}
	out := make([]ShardStatus, len(shards))
	for i, get := range gets {
		h := get.Val()
		out[i] = ShardStatus{Shard: shards[i], Replica: h["replica"], LastError: h["lastError"]}
		for _, f := range []struct {
			name string
			to   *time.Time
		}{{"lastSuccess", &out[i].LastSuccess}, {"lastCycle", &out[i].LastCycle}} {
			if h[f.name] == "" {
				continue
			}
			ms, err := strconv.ParseInt(h[f.name], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("checkpoint: status of %s: %w: %s %q", shards[i], ErrCorrupt, f.name, h[f.name])
			}
			*f.to = msTime(ms)
		}
	}
	return out, nil
}

// Members returns every member recorded, expired ones included (their
// Expires says so), sorted by id; it writes nothing.
func (r *Redis) Members(ctx context.Context) ([]Member, error) {
	r.trips.Add(1)
	raw, err := r.client.HVals(ctx, r.membersKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read the members from redis: %w", err)
	}
	var records []memberRecord
	for _, s := range raw {
		if rec, ok := decodeMember([]byte(s)); ok { // an unreadable one is pruned by the next heartbeat
			records = append(records, rec)
		}
	}
	if err := r.readConfigs(ctx, usedConfigs(records, nil, "")); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return r.configs.roster(records, nil).Members, nil
}
