package diff

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Initial is the policy for records seen for the first time on a shard that
// has never been checkpointed.
type Initial string

// The first-sight policies.
const (
	// InitialBaseline records the present state without events, so a first
	// start does not flood subscribers with history. Records that appear
	// after the first committed cycle are always announced.
	InitialBaseline Initial = "baseline"
	// InitialEmit announces every record on first sight, with an empty
	// previous status.
	InitialEmit Initial = "emit"
)

// ParseInitial validates a policy name; "" means [InitialBaseline].
func ParseInitial(s string) (Initial, error) {
	switch Initial(s) {
	case "", InitialBaseline:
		return InitialBaseline, nil
	case InitialEmit:
		return InitialEmit, nil
	}
	return "", fmt.Errorf("diff: unknown initial policy %q (want baseline or emit)", s)
}

// Options tunes [Compute].
type Options struct {
	Initial Initial
}

// Result is the outcome of one diff: the events to publish, in order, and
// the states to checkpoint once they are acknowledged.
type Result struct {
	Transitions []Transition
	Updates     []Update
}

// Compute diffs a snapshot against the previous states. It is pure and
// deterministic: transitions are ordered by invocation id, then instance id
// (the aggregate first), then run; updates by key, one per key. A record
// read twice in one snapshot — a hostile or shifting listing — is diffed
// against the state the first reading reached. An unchanged record costs a
// map lookup and allocates nothing.
func Compute(prev Previous, snap Snapshot, opts Options) Result {
	var res Result
	var updated map[Key]int // index in res.Updates of the keys this snapshot changed; made on first use
	// The transitions are gathered small, sorted, and built once their
	// number is known: a cycle that changes every record of a large shard
	// would otherwise grow and sort a slice of large structs.
	var changes []change
	for i := range snap.Records {
		rec := &snap.Records[i]
		var old State
		var seen bool
		at, again := updated[rec.Key]
		if again {
			old, seen = res.Updates[at].State, true
		} else {
			old, seen = prev.States[rec.Key]
		}
		set := func(st State) {
			if again {
				res.Updates[at].State = st
				return
			}
			if updated == nil {
				updated = map[Key]int{}
			}
			updated[rec.Key] = len(res.Updates)
			res.Updates = append(doubled(res.Updates), Update{Key: rec.Key, State: st})
			at, again = len(res.Updates)-1, true
		}
		repeats := rec.Repeats
		if seen && rec.InstanceID == "" && repeats < old.Repeats && rec.Status.Rank() > old.Status.Rank() {
			// An aggregate has no runs of its own (see AggregateRun): one
			// numbered lower than before, but further on, means the lister
			// no longer knows the task as recurring (it stopped, or a
			// restart forgot it), not an older run: it moves on.
			repeats = old.Repeats
		}
		revive := seen && old.Gone // a tombstone that reappears is live again, changed or not
		if seen && (old.Status == rec.Status && old.Repeats == repeats ||
			repeats < old.Repeats || old.Repeats == repeats && rec.Status.Rank() < old.Status.Rank()) {
			// Unchanged, an older run already past, or a stale read: a run
			// never goes back (see Status.Rank).
			if revive {
				set(State{Status: old.Status, Repeats: old.Repeats, ObservedAt: old.ObservedAt})
			}
			continue
		}
		set(State{Status: rec.Status, Repeats: repeats, ObservedAt: snap.ObservedAt})
		if !seen && !prev.Known && opts.Initial != InitialEmit {
			continue // baseline: the shard's first cycle records the present
		}
		c := change{record: i, repeats: repeats}
		if seen {
			c.previous, c.previousAt = old.Status, old.ObservedAt
		}
		changes = append(doubled(changes), c)
	}
	slices.SortFunc(res.Updates, func(a, b Update) int { return compareKeys(a.Key, b.Key) })
	byKeyAndRun := func(a, b change) int {
		return cmp.Or(compareKeys(snap.Records[a.record].Key, snap.Records[b.record].Key), cmp.Compare(a.repeats, b.repeats))
	}
	if !slices.IsSortedFunc(changes, byKeyAndRun) { // listings often come in order
		slices.SortStableFunc(changes, byKeyAndRun)
	}
	if len(changes) > 0 {
		res.Transitions = make([]Transition, len(changes))
		for j, c := range changes {
			t := &res.Transitions[j]
			*t = Transition{Account: snap.Account, Source: snap.Source, Region: snap.Region, Record: snap.Records[c.record],
				Previous: c.previous, PreviousObservedAt: c.previousAt, ObservedAt: snap.ObservedAt}
			t.Record.Repeats = c.repeats
			t.ID = EventID(*t)
		}
	}
	return res
}

// doubled makes room for one more element by doubling a full slice's
// capacity. append grows a large slice by a quarter at a time, and a cycle
// that changes every record of a large shard would copy and clear its
// updates many times over.
func doubled[T any](s []T) []T {
	if len(s) < cap(s) {
		return s
	}
	return slices.Grow(s, max(len(s), 8))
}

// change is a transition Compute found: the record, the run it reached,
// and the state it left (zero on first sight).
type change struct {
	record     int
	repeats    int
	previous   Status
	previousAt time.Time
}

func compareKeys(a, b Key) int {
	return cmp.Or(cmp.Compare(a.InvokeID, b.InvokeID), cmp.Compare(a.InstanceID, b.InstanceID))
}

// EventID is the deterministic id of a transition: a hash of what changed
// (source, region, level, ids, run, previous and new status). Publishing the
// same transition again after a crash yields the same id, which JetStream
// drops as a duplicate.
func EventID(t Transition) string {
	var scratch [256]byte // ids are short: hashed in one call, without allocating
	b := scratch[:0]
	for _, part := range [...]string{string(t.Source), t.Region, string(t.Level()), t.Record.InvokeID, t.Record.InstanceID} {
		b = append(append(b, part...), 0)
	}
	b = append(strconv.AppendInt(b, int64(t.Record.Repeats), 10), 0)
	b = append(append(b, t.Previous...), 0)
	b = append(append(b, t.Record.Status...), 0)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Expire tombstones, at now, the given checkpointed states: the records a
// complete listing no longer holds (retention). It announces nothing:
// expiry is not a transition. A tombstone keeps the record's last status.
// Already tombstoned ones are left alone.
func Expire(absent map[Key]State, now time.Time) []Update {
	var out []Update
	for k, st := range absent {
		if !st.Gone {
			st.Gone, st.GoneAt = true, now
			out = append(out, Update{Key: k, State: st})
		}
	}
	slices.SortFunc(out, func(a, b Update) int { return compareKeys(a.Key, b.Key) })
	return out
}

// Prune forgets the tombstones among states that have been gone for longer
// than ttl at now, so that a shard's state stops growing with every
// invocation ever seen. A record the API dropped that long ago does not
// come back.
func Prune(states map[Key]State, now time.Time, ttl time.Duration) []Update {
	var out []Update
	for k, st := range states {
		if st.Gone && !st.GoneAt.IsZero() && now.Sub(st.GoneAt) > ttl {
			out = append(out, Update{Key: k, Forget: true})
		}
	}
	slices.SortFunc(out, func(a, b Update) int { return compareKeys(a.Key, b.Key) })
	return out
}
