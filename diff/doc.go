// Package diff owns capoller's domain model — records, statuses, snapshots,
// checkpointed states and transitions — and the pure function that turns a
// complete snapshot plus the previously checkpointed states into transitions.
//
// It does no I/O, takes no context, never logs and never reads the clock: the
// observation time arrives inside the [Snapshot]. Its output is sorted, so the
// same inputs always give the same transitions with the same event ids.
//
// The transition table, per record (an invocation aggregate or one instance):
//
//	previous state        current record            result
//	-------------------   -----------------------   ------------------------------------
//	none, shard new       any                       baseline: state stored, no event
//	                                                (Options.Initial == InitialEmit: event)
//	none, shard known     any                       event "" -> status
//	status S, repeats R   status S, repeats R       nothing (no allocation)
//	status S, repeats R   status T != S or R' > R   event S -> T
//	status S, repeats R   any, repeats R' < R       an older run: ignored
//	status S, repeats R   T of lower Rank than S    stale read: ignored, nothing stored
//	tombstone of S, R     as for status S, R        diffed like a live state; the record is
//	                                                live again (state stored), announced only
//	                                                if it changed
//
// A record that a complete listing no longer holds is not a transition
// either: the API dropped it (retention). [Expire] tombstones it silently,
// keeping its last status, and [Prune] forgets tombstones once they are
// old enough never to come back.

package diff
