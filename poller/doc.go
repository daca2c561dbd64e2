// Package poller owns capoller's cycle — fetch a complete snapshot, diff it
// against the checkpoint, publish the transitions, then commit the
// checkpoint — and the loop that runs it per shard: poll now, then every
// interval, backing off on errors according to their class (throttling
// waits for the next minute, transient errors back off exponentially,
// permanent errors retry slowly and say so).
//
// It declares the small interfaces it consumes ([Lister], [Store],
// [Publisher]); cloudassist, checkpoint and publisher satisfy them without
// importing this package.
package poller
