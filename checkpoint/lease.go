package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capoller/capoller/diff"
)

// Replicas that share a store and key prefix (or bucket) form a group.
// Each shard has at most one owner at a time: the replica holding its
// lease. A lease lasts a TTL from its last renewal, measured on the
// caller's clock (replicas' clocks must agree to well within a TTL; NTP
// does). Safety does not rest on clocks: every lease carries a fencing
// token that grows with each new owner, and once a process has fenced a
// shard (see Redis.Fence, KV.Fence), each of its writes of that shard —
// commit, staged batch, known mark — is refused atomically in the store,
// with ErrFenced, if a newer owner exists.
//
// A replica id (the owner of a lease, the id of a Member) must be unique
// to a process: a restarted process takes a new one (host, pid and a
// random part do). Acquire by the id that holds a live lease keeps its
// token, so two processes under one id would share a token and could not
// be fenced from each other.
//
// Times are stored in Unix milliseconds: a Lease or Member read back has
// its times truncated to the millisecond, in UTC.

// ErrFenced means a newer owner holds the shard: the write was refused,
// and the caller must drop its claim rather than retry.
var ErrFenced = errors.New("checkpoint: a newer owner holds the shard")

// ErrLeaseHeld means another replica holds an unexpired lease on the shard.
var ErrLeaseHeld = errors.New("checkpoint: the shard is leased by another replica")

// ErrLeaseLost means the caller's lease was taken over or released: its
// token is no longer the shard's.
var ErrLeaseLost = errors.New("checkpoint: the lease was lost")

// Lease is a replica's claim on a shard.
type Lease struct {
	Shard diff.Shard
	// Owner is the replica id; empty when the lease was released.
	Owner string
	// Token is the fencing token: it grows with every new owner, and a
	// renewal keeps it.
	Token uint64
	// Acquired is when the current owner took the lease; Renewed its last
	// renewal; Expires is Renewed plus the TTL (zero when released).
	Acquired, Renewed, Expires time.Time
}

// Live reports whether the lease is held at now.
func (l Lease) Live(now time.Time) bool { return l.Owner != "" && now.Before(l.Expires) }

// Member is a replica of the group, as its last heartbeat described it.
type Member struct {
	ID string
	// Host and PID say where it runs; Version what it runs.
	Host    string
	PID     int
	Version string
	// Shards is a digest of the shards the member's configuration lists
	// (all an earlier version recorded of them).
	Shards string
	// Lists is every shard the member's configuration lists (empty, not
	// nil, for none); nil for a member of an earlier version, which
	// recorded only the digest.
	Lists []diff.Shard
	// Excluded are shards it lists but could not take lately (its store
	// refused their leases for a reason other than another owner): the
	// group gives them to the others for a while.
	Excluded []diff.Shard
	// Withdrawn, when not empty, says why the member takes no shard now
	// (it cannot reach the bus, while others can).
	Withdrawn string
	// BusOK is when the member last reached the bus (its last good probe).
	BusOK time.Time
	// Started is when it joined; Seen its last heartbeat; Expires is Seen
	// plus the TTL.
	Started, Seen, Expires time.Time
}

// Roster is the group as a heartbeat finds it.
type Roster struct {
	// Members are the live members, sorted by id.
	Members []Member
	// Listed are the shards a member listed within ListedMemory, sorted
	// by id: those no live member lists are polled by nobody.
	Listed []ListedShard
	// Now is the store's own clock during the heartbeat (zero where the
	// store does not tell it: KV), so that replicas compare times they
	// write on one clock.
	Now time.Time
}

// ListedShard is a shard some member's configuration listed, and the last
// heartbeat that did.
type ListedShard struct {
	Shard diff.Shard
	// By is the member whose heartbeat listed it last, at At.
	By string
	At time.Time
}

// ListedMemory is how long a group remembers a shard that no member lists
// any more: it is reported as listed by no live replica (polled by nobody)
// until then. A shard removed from every configuration on purpose is
// forgotten after it.
const ListedMemory = time.Hour

// ShardStatus is what the owner of a shard last reported of it, for
// `capoller status`.
type ShardStatus struct {
	Shard diff.Shard
	// Replica is the owner that wrote this report.
	Replica string
	// LastSuccess is when its last cycle succeeded; LastCycle when its last
	// cycle ended, successful or not.
	LastSuccess, LastCycle time.Time
	// LastError is the last failed cycle's error ("" after a success); it
	// never holds a secret (errors are redacted before they reach here).
	LastError string
}

// Leases is what a group needs of its store. Both stores implement it:
// Redis with one atomic script per operation, JetStream KV with revision
// compare-and-set.
//
//	Heartbeat   registers or renews the member, records the shards it
//	            lists as listed now (see Listed), prunes members whose
//	            heartbeat expired and shards listed by nobody for
//	            ListedMemory, and returns the roster: the live members,
//	            sorted by id, and the shards listed.
//	Listed      returns the shards listed by a member within ListedMemory,
//	            sorted, and writes nothing (for status).
//	Leave       removes the member at once (graceful shutdown).
//	Acquire     takes the shard for owner if its lease is free, released or
//	            expired at now: a new token (the last one plus one), even
//	            for the owner whose lease expired, for nothing proves it is
//	            the same process. If owner holds it unexpired, it is
//	            renewed with the same token. Otherwise it returns the
//	            current lease and ErrLeaseHeld.
//	Renew       extends the caller's lease; ErrLeaseLost (with the current
//	            lease) if its token is no longer the shard's or the lease
//	            was released. A lease that expired but was not taken over
//	            is renewed: its token is still the shard's.
//	Release     gives the lease up at once, keeping the token so that the
//	            next owner's is larger; a no-op if the lease is no longer
//	            the caller's. A released lease has only Shard and Token.
//	Members     returns every member recorded, expired ones included, sorted
//	            by id, and writes nothing (for status).
//	Leases      returns the leases of shards, in their order (a Lease with
//	            only Shard set for a shard that never had one).
//	Fence       makes every later write of shard by this process carry
//	            token and be refused with ErrFenced once a newer owner
//	            exists; token 0 writes unfenced (a single process without
//	            leases). It only registers the token, in memory: it cannot
//	            fail, and fencing the token already registered is a no-op.
//	            Redis refuses a stale write as soon as the lease has a
//	            newer token; KV from the newer owner's first access to
//	            the shard, which takes it over before it reads or writes
//	            anything (a stale write before that is one the newer
//	            owner reads).
//	Report      records a shard's status (see ShardStatus); a zero
//	            LastSuccess keeps the one recorded before, so that a failed
//	            cycle of a new owner does not hide the last success.
//	            Statuses reads them back, in the order of shards (a
//	            ShardStatus with only Shard set for one never reported).
//	            Reports are not fenced: a status is advice for operators,
//	            and the owner's next report replaces a stale one.
type Leases interface {
	Heartbeat(ctx context.Context, m Member, ttl time.Duration, now time.Time) (Roster, error)
	Listed(ctx context.Context, now time.Time) ([]ListedShard, error)
	Leave(ctx context.Context, id string) error
	Acquire(ctx context.Context, shard diff.Shard, owner string, ttl time.Duration, now time.Time) (Lease, error)
	Renew(ctx context.Context, l Lease, ttl time.Duration, now time.Time) (Lease, error)
	Release(ctx context.Context, l Lease) error
	Members(ctx context.Context) ([]Member, error)
	Leases(ctx context.Context, shards []diff.Shard) ([]Lease, error)
	Fence(shard diff.Shard, token uint64)
	Report(ctx context.Context, s ShardStatus) error
	Statuses(ctx context.Context, shards []diff.Shard) ([]ShardStatus, error)
}

// unixMs and msTime convert the stores' times: Unix milliseconds, 0 for a
// zero time.
func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// checkTTL refuses a TTL that would make a lease or heartbeat expire as
// it is written (the stores count in milliseconds).
func checkTTL(ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("checkpoint: a lease or heartbeat TTL must be at least a millisecond, got %v", ttl)
	}
	return nil
}

// memberRecord is a Member as both stores keep it. Its times are Unix
// milliseconds as float64: Redis's scripts re-encode members with cjson,
// whose numbers are doubles (exact for milliseconds until year 285,000).
type memberRecord struct {
	ID      string `json:"id"`
	Host    string `json:"host,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Version string `json:"version,omitempty"`
	// Shards is the digest of the member's configuration (ShardsDigest);
	// Listing says its list is kept under it (see configs.go): a member
	// of an earlier version wrote the digest alone.
	Shards    string  `json:"shards,omitempty"`
	Listing   bool    `json:"listing,omitempty"`
	Excluded  idList  `json:"excluded,omitempty"`
	Withdrawn string  `json:"withdrawn,omitempty"`
	BusOK     float64 `json:"busOK,omitempty"`
	Started   float64 `json:"started"`
	Seen      float64 `json:"seen"`
	Expires   float64 `json:"expires"`
}

func recordOf(m Member) memberRecord {
	r := memberRecord{ID: m.ID, Host: m.Host, PID: m.PID, Version: m.Version, Shards: m.Shards,
		Excluded: shardIDs(m.Excluded), Withdrawn: m.Withdrawn, BusOK: float64(unixMs(m.BusOK)),
		Started: float64(unixMs(m.Started)), Seen: float64(unixMs(m.Seen)), Expires: float64(unixMs(m.Expires))}
	if m.Lists != nil {
		r.Shards, r.Listing = ShardsDigest(m.Lists), true
	}
	return r
}

// member is the record as a Member, without its list (see
// configs.roster, which adds it).
func (r memberRecord) member() Member {
	return Member{ID: r.ID, Host: r.Host, PID: r.PID, Version: r.Version, Shards: r.Shards,
		Excluded: parseShardIDs(r.Excluded), Withdrawn: r.Withdrawn, BusOK: msTime(int64(r.BusOK)),
		Started: msTime(int64(r.Started)), Seen: msTime(int64(r.Seen)), Expires: msTime(int64(r.Expires))}
}

// decodeMember reads a member's record as far as it can. Another version
// may write fields this one does not know, of other types, or ids it
// cannot read: a field it cannot read is left zero, and only a record
// that is no JSON object or has no expiry is unreadable (the stores prune
// it, as Redis's script does). Refusing the whole record would fail every
// heartbeat of this version while that member lives — the shards assigned
// to this version's replicas unpolled — and, in KV, for good, since no
// heartbeat could prune it.
func decodeMember(b []byte) (memberRecord, bool) {
	var r memberRecord
	if json.Unmarshal(b, &r) == nil {
		return r, true
	}
	r = memberRecord{}
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil || json.Unmarshal(fields["expires"], &r.Expires) != nil {
		return memberRecord{}, false
	}
	for name, to := range map[string]any{"id": &r.ID, "host": &r.Host, "pid": &r.PID, "version": &r.Version,
		"shards": &r.Shards, "listing": &r.Listing, "excluded": &r.Excluded, "withdrawn": &r.Withdrawn, "busOK": &r.BusOK,
		"started": &r.Started, "seen": &r.Seen} {
		if raw, ok := fields[name]; ok {
			_ = json.Unmarshal(raw, to) // of another type: left zero
		}
	}
	return r, true
}

// idList is a list of shard ids as the stores keep it: a JSON array, or
// {} for an empty one (Redis's scripts re-encode members with cjson,
// which writes an empty array so). An item that is no string is skipped
// (parseShardIDs skips a string that is no id); null leaves it alone.
type idList []string

func (l *idList) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "null":
		return nil
	case "{}":
		*l = idList{}
		return nil
	}
	var ids []string
	if json.Unmarshal(b, &ids) == nil {
		*l = append(idList{}, ids...)
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return err
	}
	ids = idList{}
	for _, it := range items {
		var id string
		if json.Unmarshal(it, &id) == nil {
			ids = append(ids, id)
		}
	}
	*l = ids
	return nil
}

// shardIDs returns the shards' ids, sorted; nil for none.
func shardIDs(shards []diff.Shard) []string {
	if len(shards) == 0 {
		return nil
	}
	out := make([]string, len(shards))
	for i, s := range shards {
		out[i] = s.String()
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// parseShardIDs reads shard ids back, skipping any that is not one (a
// member of a later version may write more). nil for none.
func parseShardIDs(ids []string) []diff.Shard {
	var out []diff.Shard
	for _, id := range ids {
		if s, ok := ParseShardID(id); ok {
			out = append(out, s)
		}
	}
	return out
}

// ParseShardID reads a shard id, account/source/region, as
// [diff.Shard.String] writes it.
func ParseShardID(id string) (diff.Shard, bool) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return diff.Shard{}, false
	}
	return diff.Shard{Account: parts[0], Source: diff.Source(parts[1]), Region: parts[2]}, true
}

// formatMs and parseMs write and read Unix milliseconds in the stores'
// strings.
func formatMs(ms int64) string        { return strconv.FormatInt(ms, 10) }
func parseMs(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }

func sortListed(ls []ListedShard) {
	slices.SortFunc(ls, func(a, b ListedShard) int { return strings.Compare(a.Shard.String(), b.Shard.String()) })
}

// heartbeatOf is the member as its heartbeat at now records it. A zero
// Started becomes now, unless the store already has the member's (the
// stores keep that one).
func heartbeatOf(m Member, ttl time.Duration, now time.Time) Member {
	if m.Started.IsZero() {
		m.Started = now
	}
	m.Seen, m.Expires = now, now.Add(ttl)
	return m
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
}
