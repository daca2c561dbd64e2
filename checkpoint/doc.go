// Package checkpoint owns capoller's state store: the last published state
// of every record, per shard, and the history of transitions that auditors
// replay. Two stores implement the same contract:
//
//   - [Redis], for production: states in one hash per shard, loaded with a
//     few pipelined HMGETs, committed in one Lua script (one round trip,
//     atomic) together with the transitions appended to a per-shard
//     history stream;
//   - [KV], for the embedded mode: a shard's states spread over 64
//     compressed values in a JetStream key-value bucket, each committed
//     with a compare-and-set on its revision.
//
// A batch of events is staged in the store before it is published, and the
// commit that follows the publisher's acknowledgement clears it; a batch
// still staged at the next cycle (the commit failed, or the process died)
// is published again and committed as it was, so the states, the events
// and their previousStatus never disagree. Every string round-trips
// through the encoding (see codec.go).
//
// Both stores also hold what a group of replicas shares (see [Leases]):
// a lease per shard with a fencing token, the members' heartbeats, and
// each shard's last reported status. A process that fences a shard with
// its lease's token has every later commit, staged batch and known mark
// of it refused with [ErrFenced] once a newer owner holds the shard.
//
// It also connects to Redis for the [Redis] store: [OpenRedis] reads a URL
// naming one server (redis://), a Cluster (redis+cluster://) or a
// Sentinel-run master (redis+sentinel://), each with TLS as rediss…, and
// applies an ACL user, a password (inline or from a file) and TLS files
// ([RedisAuth]) over it; [CheckRedisURL] validates the same for a
// configuration. No error shows a password.
package checkpoint
