package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/diff"
)

// In the bucket, a shard's lease is the value <shard>.lease (kvLease),
// the group's members the one value group.members (a JSON object of id
// -> memberRecord), and a shard's status <shard>.status (kvStatus). Each
// change is a read, a decision and a compare-and-set on the revision
// read; a compare-and-set that lost re-reads and decides again, so racing
// replicas are decided one after the other. A lease is never deleted:
// its token only grows.

// kvLease is a lease as the bucket keeps it; times in Unix milliseconds.
type kvLease struct {
	Owner    string `json:"owner"`
	Token    uint64 `json:"token"`
	Acquired int64  `json:"acquired"`
	Renewed  int64  `json:"renewed"`
	Expires  int64  `json:"expires"`
}

func (l kvLease) lease(shard diff.Shard) Lease {
	return Lease{Shard: shard, Owner: l.Owner, Token: l.Token, Acquired: msTime(l.Acquired), Renewed: msTime(l.Renewed), Expires: msTime(l.Expires)}
}

// membersKey is the group's membership value, and listedKey the shards
// its members listed (a JSON object of shard id -> "<Unix ms>|<member>");
// a shard's values have four tokens or more, so neither can be a shard's.
const (
	membersKey = "group.members"
	listedKey  = "group.listed"
)

// maxCASRounds bounds the compare-and-set retries of one change: each
// lost round means another writer's change was made, so only a storm of
// them (hundreds of replicas at once) reaches it.
const maxCASRounds = 100

// change reads key, lets decide compute its new value from the current
// one (nil: none) and writes it with a compare-and-set, again from a
// fresh read whenever another writer got in between. decide returning
// nil writes nothing.
func (k *KV) change(ctx context.Context, key string, decide func(current []byte) ([]byte, error)) error {
	for range maxCASRounds {
		entry, err := k.kv.Get(ctx, key)
		var current []byte
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			current, rev = entry.Value(), entry.Revision()
		}
		next, err := decide(current)
		if err != nil || next == nil {
			return err
		}
		if rev == 0 {
			_, err = k.kv.Create(ctx, key, next)
		} else {
			_, err = k.kv.Update(ctx, key, next, rev)
		}
		if !isCASFailure(err) {
			return err
		}
	}
	return fmt.Errorf("%w: %d rounds of compare-and-set lost on %s", ErrConflict, maxCASRounds, key)
}

// getLease reads a shard's lease (a zero one if it never had one).
func (k *KV) getLease(ctx context.Context, shard diff.Shard) (kvLease, error) {
	entry, err := k.kv.Get(ctx, kvKey(shard, "lease"))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return kvLease{}, nil
	}
	if err != nil {
		return kvLease{}, fmt.Errorf("checkpoint: read the lease of %s from key-value: %w", shard, err)
	}
	return decodeLease(shard, entry.Value())
}

func decodeLease(shard diff.Shard, value []byte) (kvLease, error) {
	var l kvLease
	if value == nil {
		return l, nil
	}
	if err := json.Unmarshal(value, &l); err != nil {
		return l, fmt.Errorf("checkpoint: lease of %s: %w: %w", shard, ErrCorrupt, err)
	}
	return l, nil
}

// leaseToken is the token of the shard's lease (0: never leased).
func (k *KV) leaseToken(ctx context.Context, shard diff.Shard) (uint64, error) {
	l, err := k.getLease(ctx, shard)
	return l.Token, err
}

// Acquire takes the shard's lease for owner (see [Leases]).
func (k *KV) Acquire(ctx context.Context, shard diff.Shard, owner string, ttl time.Duration, now time.Time) (Lease, error) {
	shard = shard.Canonical()
	if owner == "" {
		return Lease{Shard: shard}, errors.New("checkpoint: a lease needs an owner")
	}
	if err := checkTTL(ttl); err != nil {
		return Lease{Shard: shard}, err
	}
	var got kvLease
	held := false
	err := k.change(ctx, kvKey(shard, "lease"), func(current []byte) ([]byte, error) {
		l, err := decodeLease(shard, current)
		if err != nil {
			return nil, err
		}
		at := unixMs(now)
		live := l.Owner != "" && at < l.Expires
		if held = live && l.Owner != owner; held {
			got = l
			return nil, nil
		}
		if !live {
			// At least now in milliseconds: should the lease value be
			// lost (a bucket recreated), tokens still grow.
			l = kvLease{Owner: owner, Token: max(l.Token+1, uint64(max(at, 0))), Acquired: at}
		}
		l.Renewed, l.Expires = at, unixMs(now.Add(ttl))
		got = l
		return json.Marshal(l)
	})
	if err != nil {
		return Lease{Shard: shard}, fmt.Errorf("checkpoint: acquire %s in key-value: %w", shard, err)
	}
	if held {
		return got.lease(shard), fmt.Errorf("checkpoint: acquire %s: %w (by %s until %s)", shard, ErrLeaseHeld, got.Owner, msTime(got.Expires).Format(time.RFC3339Nano))
	}
	return got.lease(shard), nil
}

// Renew extends the caller's lease (see [Leases]).
func (k *KV) Renew(ctx context.Context, l Lease, ttl time.Duration, now time.Time) (Lease, error) {
	l.Shard = l.Shard.Canonical()
	if err := checkTTL(ttl); err != nil {
		return l, err
	}
	var got kvLease
	lost := false
	err := k.change(ctx, kvKey(l.Shard, "lease"), func(current []byte) ([]byte, error) {
		cur, err := decodeLease(l.Shard, current)
		if err != nil {
			return nil, err
		}
		got = cur
		if lost = l.Owner == "" || cur.Owner != l.Owner || cur.Token != l.Token; lost {
			return nil, nil
		}
		got.Renewed, got.Expires = unixMs(now), unixMs(now.Add(ttl))
		return json.Marshal(got)
	})
	if err != nil {
		return l, fmt.Errorf("checkpoint: renew %s in key-value: %w", l.Shard, err)
	}
	if lost {
		return got.lease(l.Shard), fmt.Errorf("checkpoint: renew %s with token %d: %w (the shard's is %d)", l.Shard, l.Token, ErrLeaseLost, got.Token)
	}
	return got.lease(l.Shard), nil
}

// Release gives the lease up at once, keeping its token.
func (k *KV) Release(ctx context.Context, l Lease) error {
	l.Shard = l.Shard.Canonical()
	err := k.change(ctx, kvKey(l.Shard, "lease"), func(current []byte) ([]byte, error) {
		cur, err := decodeLease(l.Shard, current)
		if err != nil || l.Owner == "" || cur.Owner != l.Owner || cur.Token != l.Token {
			return nil, err
		}
		return json.Marshal(kvLease{Token: cur.Token})
	})
	if err != nil {
		return fmt.Errorf("checkpoint: release %s in key-value: %w", l.Shard, err)
	}
	return nil
}

// Leases returns the leases of shards, read side by side.
func (k *KV) Leases(ctx context.Context, shards []diff.Shard) ([]Lease, error) {
	shards = diff.Canonical(shards)
	out := make([]Lease, len(shards))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, s := range shards {
		g.Go(func() error {
			l, err := k.getLease(gctx, s)
			out[i] = l.lease(s)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Heartbeat registers or renews m, records the shards it lists, prunes
// the members whose heartbeat expired at now and the shards listed by
// nobody for ListedMemory, and returns the roster.
func (k *KV) Heartbeat(ctx context.Context, m Member, ttl time.Duration, now time.Time) (Roster, error) {
	if m.ID == "" {
		return Roster{}, errors.New("checkpoint: a member needs an id")
	}
	if err := checkTTL(ttl); err != nil {
		return Roster{}, err
	}
	beat := recordOf(heartbeatOf(m, ttl, now))
	var live map[string]memberRecord
	err := k.change(ctx, membersKey, func(current []byte) ([]byte, error) {
		raw, err := decodeRawMembers(current)
		if err != nil {
			return nil, err
		}
		rec := beat
		if old, ok := decodeMember(raw[m.ID]); ok && m.Started.IsZero() {
			rec.Started = old.Started
		}
		if raw[m.ID], err = json.Marshal(rec); err != nil {
			return nil, err
		}
		at := float64(unixMs(now))
		live = membersOf(raw)
		for id := range raw {
			if r, ok := live[id]; !ok || r.Expires <= at {
				delete(raw, id)
				delete(live, id)
			}
		}
		return json.Marshal(raw) // the others' records as they wrote them
	})
	if err != nil {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s in key-value: %w", m.ID, err)
	}
	records := slices.Collect(maps.Values(live))
	digest := ""
	if beat.Listing {
		digest = beat.Shards
		if err := k.storeConfig(ctx, digest, m.Lists); err != nil {
			return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s in key-value: %w", m.ID, err)
		}
	}
	listed, err := k.list(ctx, m.ID, digest, now)
	if err != nil {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s in key-value: %w", m.ID, err)
	}
	used := usedConfigs(records, listed, digest)
	k.configs.keep(used)
	if err := k.readConfigs(ctx, used); err != nil {
		return Roster{}, fmt.Errorf("checkpoint: heartbeat of %s in key-value: %w", m.ID, err)
	}
	return k.configs.roster(records, listed), nil
}

// configKey is the value of a configuration's list.
func configKey(digest string) string { return "group.config." + digest }

// storeConfig writes the list of the configuration digest unless this
// process knows the bucket has it: a list never changes under its digest.
func (k *KV) storeConfig(ctx context.Context, digest string, shards []diff.Shard) error {
	if !k.configs.own(digest, shards) {
		return nil
	}
	_, err := k.kv.Create(ctx, configKey(digest), listIDs(shards))
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("write the configuration %s: %w", digest, err)
	}
	k.configs.storedAs(digest, true)
	return nil
}

// readConfigs reads the lists of digests that are not cached yet, side
// by side.
func (k *KV) readConfigs(ctx context.Context, digests []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, d := range k.configs.missing(digests) {
		g.Go(func() error {
			entry, err := k.kv.Get(gctx, configKey(d))
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				k.configs.storedAs(d, false) // written again by its members' next heartbeat
				return nil
			case err != nil:
				return fmt.Errorf("read the configuration %s: %w", d, err)
			}
			k.configs.put(d, entry.Value())
			return nil
		})
	}
	return g.Wait()
}

// listedRefresh is how stale a configuration's listing may grow before
// a heartbeat of a member of it writes it again: every write of the one
// value is a compare-and-set that the group's members contend for.
const listedRefresh = time.Minute

// list records the configuration digest ("" for none) as listed by
// member at now, where its listing is missing or older than
// listedRefresh, prunes (with their lists) the configurations listed by
// nobody for ListedMemory, and returns those listed.
func (k *KV) list(ctx context.Context, member, digest string, now time.Time) (map[string]string, error) {
	var listed map[string]string
	var forgotten []string
	err := k.change(ctx, listedKey, func(current []byte) ([]byte, error) {
		all, err := decodeListed(current)
		if err != nil {
			return nil, err
		}
		changed := false
		if at, _, ok := parseStamp(all[digest]); digest != "" && (!ok || now.Sub(at) > listedRefresh) {
			all[digest], changed = stamp(member, now), true
		}
		forgotten = forgotten[:0]
		for d, s := range all {
			if at, _, ok := parseStamp(s); !ok || at.Before(now.Add(-ListedMemory)) {
				delete(all, d)
				forgotten = append(forgotten, d)
				changed = true
			}
		}
		listed = all
		if !changed {
			return nil, nil
		}
		return json.Marshal(all)
	})
	if err != nil {
		return nil, err
	}
	for _, d := range forgotten {
		_ = k.kv.Delete(ctx, configKey(d)) // best effort: a list left behind is read by nobody
	}
	return listed, nil
}

// decodeListed reads the listed shards; a value that is no string
// (another version's) reads as "", which no stamp is, so that it is
// dropped as Redis's script drops a stamp it cannot read, rather than
// failing every heartbeat.
func decodeListed(value []byte) (map[string]string, error) {
	all := map[string]string{}
	if value == nil {
		return all, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(value, &raw); err != nil {
		return nil, fmt.Errorf("%w: listed shards: %w", ErrCorrupt, err)
	}
	for id, v := range raw {
		var stamp string
		_ = json.Unmarshal(v, &stamp)
		all[id] = stamp
	}
	return all, nil
}

// Listed returns the shards a configuration listed since now minus
// ListedMemory; it writes nothing.
func (k *KV) Listed(ctx context.Context, now time.Time) ([]ListedShard, error) {
	var value []byte
	entry, err := k.kv.Get(ctx, listedKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("checkpoint: read the listed shards from key-value: %w", err)
	default:
		value = entry.Value()
	}
	all, err := decodeListed(value)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read the listed shards: %w", err)
	}
	maps.DeleteFunc(all, func(_, s string) bool {
		at, _, ok := parseStamp(s)
		return !ok || at.Before(now.Add(-ListedMemory))
	})
	if err := k.readConfigs(ctx, usedConfigs(nil, all, "")); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return k.configs.listedShards(all), nil
}

// decodeRawMembers reads the members value as each member's record, as
// written: a heartbeat rewrites only its own, so that another version's
// fields survive this one's heartbeats.
func decodeRawMembers(value []byte) (map[string]json.RawMessage, error) {
	raw := map[string]json.RawMessage{}
	if value == nil {
		return raw, nil
	}
	if err := json.Unmarshal(value, &raw); err != nil {
		return nil, fmt.Errorf("%w: members: %w", ErrCorrupt, err)
	}
	return raw, nil
}

// membersOf reads the records that can be read (see decodeMember).
func membersOf(raw map[string]json.RawMessage) map[string]memberRecord {
	all := make(map[string]memberRecord, len(raw))
	for id, v := range raw {
		if r, ok := decodeMember(v); ok {
			r.ID = id // the key is the id, whatever a value says
			all[id] = r
		}
	}
	return all
}

// Leave removes the member at once.
func (k *KV) Leave(ctx context.Context, id string) error {
	err := k.change(ctx, membersKey, func(current []byte) ([]byte, error) {
		raw, err := decodeRawMembers(current)
		if err != nil {
			return nil, err
		}
		if _, ok := raw[id]; !ok {
			return nil, nil
		}
		delete(raw, id)
		return json.Marshal(raw)
	})
	if err != nil {
		return fmt.Errorf("checkpoint: leave of %s in key-value: %w", id, err)
	}
	return nil
}

// kvStatus is a ShardStatus as the bucket keeps it; times in Unix
// milliseconds.
type kvStatus struct {
	Replica     string `json:"replica"`
	LastSuccess int64  `json:"lastSuccess,omitempty"`
	LastCycle   int64  `json:"lastCycle,omitempty"`
	LastError   string `json:"lastError,omitempty"`
}

// Report records the shard's status, keeping the last success recorded
// before when s has none.
func (k *KV) Report(ctx context.Context, s ShardStatus) error {
	s.Shard = s.Shard.Canonical()
	err := k.change(ctx, kvKey(s.Shard, "status"), func(current []byte) ([]byte, error) {
		var old kvStatus
		if current != nil {
			_ = json.Unmarshal(current, &old) // an unreadable report is replaced whole
		}
		st := kvStatus{Replica: s.Replica, LastSuccess: unixMs(s.LastSuccess), LastCycle: unixMs(s.LastCycle), LastError: s.LastError}
		if st.LastSuccess == 0 {
			st.LastSuccess = old.LastSuccess
		}
		return json.Marshal(st)
	})
	if err != nil {
		return fmt.Errorf("checkpoint: report the status of %s to key-value: %w", s.Shard, err)
	}
	return nil
}

// Statuses returns the shards' last reports, read side by side.
func (k *KV) Statuses(ctx context.Context, shards []diff.Shard) ([]ShardStatus, error) {
	shards = diff.Canonical(shards)
	out := make([]ShardStatus, len(shards))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, shard := range shards {
		g.Go(func() error {
			out[i] = ShardStatus{Shard: shard}
			entry, err := k.kv.Get(gctx, kvKey(shard, "status"))
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("checkpoint: read the status of %s from key-value: %w", shard, err)
			}
			var st kvStatus
			if err := json.Unmarshal(entry.Value(), &st); err != nil {
				return fmt.Errorf("checkpoint: status of %s: %w: %w", shard, ErrCorrupt, err)
			}
			out[i] = ShardStatus{Shard: shard, Replica: st.Replica, LastSuccess: msTime(st.LastSuccess), LastCycle: msTime(st.LastCycle), LastError: st.LastError}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Members returns every member recorded, expired ones included (their
// Expires says so), sorted by id; it writes nothing.
func (k *KV) Members(ctx context.Context) ([]Member, error) {
	var value []byte
	entry, err := k.kv.Get(ctx, membersKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("checkpoint: read the members from key-value: %w", err)
	default:
		value = entry.Value()
	}
	raw, err := decodeRawMembers(value)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read the members: %w", err)
	}
	records := slices.Collect(maps.Values(membersOf(raw)))
	if err := k.readConfigs(ctx, usedConfigs(records, nil, "")); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return k.configs.roster(records, nil).Members, nil
}
