// Package checkpoint owns capoller's state store: the last published state
// of every record, per shard, and the history of transitions that auditors
// replay. Two stores implement the same contract:
//
//   - [Redis], for production: states in one hash per shard, loaded with a
//     few pipelined HMGETs, committed in one MULTI/EXEC transaction together
//     with the transitions appended to a per-shard history stream;
//   - [KV], for the embedded mode: one compressed value per shard in a
//     JetStream key-value bucket, committed with a compare-and-set on its
//     revision.
//
// A store is only ever written after the publisher acknowledged the events
// of the batch, so a crash between the two re-publishes the same event ids.
package checkpoint
