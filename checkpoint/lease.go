package checkpoint

import (
	"context"
	"errors"
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
	// Started is when it joined; Seen its last heartbeat; Expires is Seen
	// plus the TTL.
	Started, Seen, Expires time.Time
}

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
//	Heartbeat   registers or renews the member, prunes members whose
//	            heartbeat expired, and returns the live members, sorted by id.
//	Leave       removes the member at once (graceful shutdown).
//	Acquire     takes the shard for owner if its lease is free, released or
//	            expired at now: a new token (the last one plus one). If owner
//	            already holds it, it is renewed with the same token.
//	            Otherwise it returns the current lease and ErrLeaseHeld.
//	Renew       extends the caller's lease; ErrLeaseLost if its token is no
//	            longer the shard's or the lease was released.
//	Release     gives the lease up at once, keeping the token so that the
//	            next owner's is larger; a no-op if the lease is no longer
//	            the caller's.
//	Leases      returns the leases of shards (a zero Lease for a shard that
//	            never had one).
//	Fence       makes every later write of shard by this process carry
//	            token and be refused with ErrFenced once a newer owner
//	            exists; token 0 writes unfenced (a single process without
//	            leases).
//	Report      records a shard's status (see ShardStatus); Statuses reads
//	            them back.
type Leases interface {
	Heartbeat(ctx context.Context, m Member, ttl time.Duration, now time.Time) ([]Member, error)
	Leave(ctx context.Context, id string) error
	Acquire(ctx context.Context, shard diff.Shard, owner string, ttl time.Duration, now time.Time) (Lease, error)
	Renew(ctx context.Context, l Lease, ttl time.Duration, now time.Time) (Lease, error)
	Release(ctx context.Context, l Lease) error
	Leases(ctx context.Context, shards []diff.Shard) ([]Lease, error)
	Fence(shard diff.Shard, token uint64)
	Report(ctx context.Context, s ShardStatus) error
	Statuses(ctx context.Context, shards []diff.Shard) ([]ShardStatus, error)
}
