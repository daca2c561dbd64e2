// Package poller owns capoller's cycle — fetch a listing chunk by chunk,
// diff it against the checkpoint, stage each batch of transitions in the
// store, publish it, then commit it — and the loop that runs it per shard:
// poll now, then every interval, backing off on errors according to their
// class (throttling waits for the next window, transient errors back off
// exponentially, permanent errors retry slowly and say so).
//
// The promises it keeps: a batch staged and not committed (a failed
// commit, a crash at any step) is published again and committed before
// anything is diffed again, so previousStatus always names the record's
// previous event; a record expires only when two consecutive complete
// listings lack it; and a shard the store does not know but whose events
// are in the stream is a lost checkpoint, rebuilt from the stream, not a
// new shard.
//
// With Options.Tracing, a cycle is a trace: its span, the lister's API
// calls under it, and per batch a publish span (the stage under it) and a
// commit span. Each event carries its publish's trace context, staged
// with its batch, so that a re-publish keeps the trace of the cycle that
// observed the change (its publish span links to it); the trace context
// is not part of an event's id.
//
// It declares the small interfaces it consumes ([Lister], [Store],
// [Publisher], [Recovery]); cloudassist, checkpoint and publisher satisfy
// them without importing this package.
package poller
