package diff

import (
	"testing"
	"time"
)

// FuzzComputeReplay checks the diff's central invariant: once the updates of
// a snapshot (and, for a complete one, the expiry of what it lacks) are
// applied, replaying the same snapshot yields no event and no update. The
// fuzz input describes the previous states and the snapshot; the corpus
// lives in testdata/fuzz/FuzzComputeReplay.
func FuzzComputeReplay(f *testing.F) {
	f.Add([]byte{1, 0, 2, 3, 1, 1, 5, 0, 2}, true, false)
	f.Add([]byte{0, 0, 0, 0, 0, 0}, false, true)
	f.Add([]byte{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9}, true, true)
	statuses := []Status{"", StatusPending, StatusScheduled, StatusRunning, StatusStopping, StatusSuccess, StatusFailed,
		StatusPartialFailed, StatusStopped, StatusFinished, StatusInvalid, StatusAborted, StatusError, StatusTimeout,
		StatusCancelled, StatusTerminated, "Quarantined"}
	f.Fuzz(func(t *testing.T, data []byte, known, complete bool) {
		prev := Previous{Known: known, States: map[Key]State{}}
		snap := Snapshot{Source: SourceECS, Region: "r", ObservedAt: time.Unix(1000, 0), Complete: complete}
		type progress struct{ repeats, rank int }
		last := map[Key]progress{} // listers give records in increasing (run, rank) order
		runs := map[Key][]Record{} // … and adjacent per key
		var order []Key
		for i := 0; i+2 < len(data); i += 3 {
			k := Key{InvokeID: "t-" + string('a'+rune(data[i]%4))}
			if data[i]&4 != 0 {
				k.InstanceID = "i-" + string('a'+rune(data[i+1]%3))
			}
			st := statuses[int(data[i+2])%len(statuses)]
			repeats := int(data[i+1] % 4)
			if data[i]&8 != 0 {
				prev.States[k] = State{Status: st, Repeats: repeats, Gone: data[i]&16 != 0, GoneAt: time.Unix(10, 0)}
			} else if k.InstanceID == "" && len(runs[k]) > 0 {
				continue // an aggregate is read once per listing: it has no runs of its own
			} else if l, ok := last[k]; !ok || repeats > l.repeats || repeats == l.repeats && st.Rank() > l.rank {
				last[k] = progress{repeats, st.Rank()}
				if len(runs[k]) == 0 {
					order = append(order, k)
				}
				runs[k] = append(runs[k], Record{Key: k, Status: st, Repeats: repeats})
			}
		}
		for _, k := range order {
			snap.Records = append(snap.Records, runs[k]...)
		}
		opts := Options{Initial: InitialBaseline}
		if data != nil && len(data)%2 == 1 {
			opts.Initial = InitialEmit
		}
		res := Compute(prev, snap, opts)
		res.Updates = append(res.Updates, expireAbsent(prev, snap)...)
		for _, tr := range res.Transitions {
			if old, ok := prev.States[tr.Record.Key]; ok && old.Gone && old.Status == tr.Record.Status && old.Repeats == tr.Record.Repeats {
				t.Fatalf("an unchanged tombstoned record was announced: %+v", tr)
			}
		}
		next := Previous{Known: true, States: map[Key]State{}}
		for k, v := range prev.States {
			next.States[k] = v
		}
		for _, u := range res.Updates {
			next.States[u.Key] = u.State
		}
		again := Compute(next, snap, opts)
		again.Updates = append(again.Updates, expireAbsent(next, snap)...)
		if len(again.Transitions) != 0 || len(again.Updates) != 0 {
			t.Fatalf("replaying the same snapshot gave %d transitions and %d updates: %+v", len(again.Transitions), len(again.Updates), again)
		}
	})
}

// expireAbsent is what the poller does after a complete listing.
func expireAbsent(prev Previous, snap Snapshot) []Update {
	if !snap.Complete {
		return nil
	}
	present := map[Key]bool{}
	for _, r := range snap.Records {
		present[r.Key] = true
	}
	absent := map[Key]State{}
	for k, st := range prev.States {
		if !present[k] {
			absent[k] = st
		}
	}
	return Expire(absent, snap.ObservedAt)
}
