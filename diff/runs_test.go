package diff

import (
	"fmt"
	"testing"
	"time"
)

func TestComputeRunsOfPeriodicTasks(t *testing.T) {
	t0 := time.Unix(100, 0).UTC()
	k := Key{InvokeID: "t-p", InstanceID: "i-1"}
	prev := Previous{Known: true, States: map[Key]State{k: {Status: StatusRunning, Repeats: 3, ObservedAt: t0}}}
	// Between two polls run 3 finished, run 4 started and finished, run 5
	// started; history lists them oldest first, then the current record.
	snap := Snapshot{Source: SourceECS, Region: "r", ObservedAt: t0.Add(time.Minute), Records: []Record{
		{Key: k, Status: StatusSuccess, Repeats: 2}, // older than the checkpoint: ignored
		{Key: k, Status: StatusSuccess, Repeats: 3},
		{Key: k, Status: StatusSuccess, Repeats: 4},
		{Key: k, Status: StatusRunning, Repeats: 5},
	}}
	res := Compute(prev, snap, Options{})
	want := []struct {
		from, to Status
		repeats  int
	}{
		{StatusRunning, StatusSuccess, 3},
		{StatusSuccess, StatusSuccess, 4},
		{StatusSuccess, StatusRunning, 5},
	}
	if len(res.Transitions) != len(want) {
		t.Fatalf("transitions: %+v", res.Transitions)
	}
	ids := map[string]bool{}
	for i, w := range want {
		got := res.Transitions[i]
		if got.Previous != w.from || got.Record.Status != w.to || got.Record.Repeats != w.repeats {
			t.Errorf("transition %d: %s -> %s run %d, want %s -> %s run %d", i, got.Previous, got.Record.Status, got.Record.Repeats, w.from, w.to, w.repeats)
		}
		ids[got.ID] = true
	}
	if len(ids) != 3 {
		t.Error("runs share an event id")
	}
	if len(res.Updates) != 1 || res.Updates[0].State.Repeats != 5 || res.Updates[0].State.Status != StatusRunning {
		t.Errorf("updates: %+v", res.Updates)
	}
	// The periodic instance's "Scheduled" between runs, at the same run, is
	// not a regression of the finished run to announce.
	after := Previous{Known: true, States: map[Key]State{k: {Status: StatusSuccess, Repeats: 5}}}
	if res := Compute(after, Snapshot{Records: []Record{{Key: k, Status: StatusScheduled, Repeats: 5}}}, Options{}); len(res.Transitions)+len(res.Updates) != 0 {
		t.Errorf("Scheduled after a finished run produced %+v", res)
	}
}

func TestExpireAndTombstones(t *testing.T) {
	t0 := time.Unix(100, 0).UTC()
	gone := t0.Add(time.Hour)
	old := Key{InvokeID: "t-old"}
	oldInst := Key{InvokeID: "t-old", InstanceID: "i-1"}
	already := Key{InvokeID: "t-gone"}
	ups := Expire(map[Key]State{
		oldInst: {Status: StatusRunning, Repeats: 1, ObservedAt: t0},
		old:     {Status: StatusSuccess, ObservedAt: t0},
		already: {Status: StatusSuccess, ObservedAt: t0, Gone: true, GoneAt: t0},
	}, gone)
	if len(ups) != 2 || ups[0].Key != old || ups[1].Key != oldInst {
		t.Fatalf("updates: %+v", ups)
	}
	for _, u := range ups {
		if !u.State.Gone || !u.State.ObservedAt.Equal(t0) || !u.State.GoneAt.Equal(gone) {
			t.Errorf("tombstone of %v: %+v", u.Key, u.State)
		}
	}
	if ups[0].State.Status != StatusSuccess || ups[1].State.Status != StatusRunning {
		t.Error("a tombstone lost the record's last status")
	}
}

// TestTombstonesAreDiffedWhenTheyReappear is the regression test of a
// wrong complete listing silencing records forever: a tombstoned record
// that reappears is diffed against its last status.
func TestTombstonesAreDiffedWhenTheyReappear(t *testing.T) {
	t0 := time.Unix(100, 0).UTC()
	unchanged := Key{InvokeID: "t-same"}
	changed := Key{InvokeID: "t-run", InstanceID: "i-1"}
	stale := Key{InvokeID: "t-stale", InstanceID: "i-1"}
	tomb := func(s Status, repeats int) State {
		return State{Status: s, Repeats: repeats, ObservedAt: t0, Gone: true, GoneAt: t0.Add(time.Minute)}
	}
	prev := Previous{Known: true, States: map[Key]State{
		unchanged: tomb(StatusSuccess, 0),
		changed:   tomb(StatusRunning, 1),
		stale:     tomb(StatusSuccess, 2),
	}}
	back := Snapshot{ObservedAt: t0.Add(time.Hour), Records: []Record{
		{Key: unchanged, Status: StatusSuccess},
		{Key: changed, Status: StatusSuccess, Repeats: 1},
		{Key: stale, Status: StatusRunning, Repeats: 2},
	}}
	res := Compute(prev, back, Options{})
	if len(res.Transitions) != 1 || res.Transitions[0].Record.Key != changed ||
		res.Transitions[0].Previous != StatusRunning || !res.Transitions[0].PreviousObservedAt.Equal(t0) {
		t.Fatalf("transitions %+v, want only %v Running -> Success", res.Transitions, changed)
	}
	if len(res.Updates) != 3 {
		t.Fatalf("updates %+v: every reappearing tombstone must come back to life", res.Updates)
	}
	for _, u := range res.Updates {
		if u.State.Gone || u.Forget {
			t.Errorf("%v is still a tombstone: %+v", u.Key, u.State)
		}
	}
	// Applied, the same listing is quiet.
	for _, u := range res.Updates {
		prev.States[u.Key] = u.State
	}
	if again := Compute(prev, back, Options{}); len(again.Transitions)+len(again.Updates) != 0 {
		t.Errorf("replay after revival: %+v", again)
	}
}

func TestPruneForgetsOldTombstones(t *testing.T) {
	now := time.Unix(100*86400, 0).UTC()
	ttl := 31 * 24 * time.Hour
	states := map[Key]State{
		{InvokeID: "t-live"}:   {Status: StatusSuccess, ObservedAt: now.Add(-90 * 24 * time.Hour)},
		{InvokeID: "t-young"}:  {Status: StatusSuccess, Gone: true, GoneAt: now.Add(-ttl + time.Hour)},
		{InvokeID: "t-old"}:    {Status: StatusSuccess, Gone: true, GoneAt: now.Add(-ttl - time.Hour)},
		{InvokeID: "t-nodate"}: {Status: StatusSuccess, Gone: true},
	}
	ups := Prune(states, now, ttl)
	if len(ups) != 1 || ups[0].Key.InvokeID != "t-old" || !ups[0].Forget {
		t.Fatalf("pruned %+v, want only t-old", ups)
	}
}

// TestAggregateRules checks every rule of the SWAS document's overall
// InvocationStatus description.
func TestAggregateRules(t *testing.T) {
	for _, tc := range []struct {
		rule      string
		instances []Status
		want      Status
	}{
		{"at least one Pending: Pending", []Status{StatusPending, StatusSuccess}, StatusPending},
		{"at least one Running: Running", []Status{StatusRunning, StatusSuccess, StatusFailed}, StatusRunning},
		{"Running wins over Pending", []Status{StatusPending, StatusRunning}, StatusRunning},
		{"periodic: Scheduled keeps it Running", []Status{StatusScheduled, StatusSuccess}, StatusRunning},
		{"at least one Stopping: Stopping", []Status{StatusStopping, StatusRunning}, StatusStopping},
		{"all Success: Success", []Status{StatusSuccess, StatusSuccess}, StatusSuccess},
		{"Success and Stopped: Success", []Status{StatusSuccess, StatusStopped}, StatusSuccess},
		{"Success and Cancelled: Success", []Status{StatusSuccess, StatusCancelled}, StatusSuccess},
		{"Success and Terminated: Success", []Status{StatusSuccess, StatusTerminated}, StatusSuccess},
		{"all Failed: Failed", []Status{StatusFailed, StatusFailed}, StatusFailed},
		{"Failed and Stopped: Failed", []Status{StatusFailed, StatusStopped}, StatusFailed},
		{"Invalid is failed", []Status{StatusInvalid}, StatusFailed},
		{"Aborted is failed", []Status{StatusAborted}, StatusFailed},
		{"Timeout is failed", []Status{StatusTimeout}, StatusFailed},
		{"Error is failed", []Status{StatusError}, StatusFailed},
		{"Success and Failed: PartialFailed", []Status{StatusSuccess, StatusFailed}, StatusPartialFailed},
		{"Success, Failed and Stopped: PartialFailed", []Status{StatusSuccess, StatusTimeout, StatusStopped}, StatusPartialFailed},
		{"all Stopped: Stopped", []Status{StatusStopped, StatusStopped}, StatusStopped},
		{"Cancelled is stopped", []Status{StatusCancelled}, StatusStopped},
		{"Terminated is stopped", []Status{StatusTerminated, StatusStopped}, StatusStopped},
		{"legacy Finished counts as Success", []Status{StatusFinished, StatusFailed}, StatusPartialFailed},
		{"an unknown status is not final", []Status{"Quarantined", StatusSuccess}, StatusRunning},
		{"no instances", nil, ""},
	} {
		if got := Aggregate(tc.instances); got != tc.want {
			t.Errorf("%s: Aggregate(%v) = %q, want %q", tc.rule, tc.instances, got, tc.want)
		}
	}
}

func TestComputeRankWithinARun(t *testing.T) {
	k := Key{InvokeID: "t-p", InstanceID: "i-1"}
	state := func(s Status) Previous {
		return Previous{Known: true, States: map[Key]State{k: {Status: s, Repeats: 5}}}
	}
	for _, tc := range []struct {
		from, to Status
		event    bool
	}{
		{StatusSuccess, StatusStopped, true},    // the schedule stopped after the last run
		{StatusRunning, StatusStopping, true},   // a stop request
		{StatusStopping, StatusSuccess, true},   // the run finished before the stop took effect
		{StatusStopped, StatusSuccess, false},   // stale
		{StatusSuccess, StatusScheduled, false}, // a periodic instance waiting again: not a regression to announce
		{StatusStopping, StatusRunning, false},  // stale
		{StatusSuccess, StatusFailed, true},     // outcomes of equal rank: a real change
		{StatusPending, StatusScheduled, true},  // equal rank, waiting states
		{StatusSuccess, "Quarantined", false},   // unknown ranks as running: stale after an outcome
		{"Quarantined", StatusSuccess, true},
	} {
		res := Compute(state(tc.from), Snapshot{Records: []Record{{Key: k, Status: tc.to, Repeats: 5}}}, Options{})
		if got := len(res.Transitions) == 1; got != tc.event {
			t.Errorf("%s -> %s in one run: event %v, want %v", tc.from, tc.to, got, tc.event)
		}
	}
}

// TestComputeARecordReadTwice: a page that lists one record twice, apart,
// is diffed as one history — the second reading against the state the
// first reached — and leaves one update.
func TestComputeARecordReadTwice(t *testing.T) {
	a := Key{InvokeID: "t-1"}
	b := Key{InvokeID: "t-1", InstanceID: "i-1"}
	prev := Previous{Known: true, States: map[Key]State{a: {Status: StatusPending}, b: {Status: StatusPending}}}
	res := Compute(prev, Snapshot{Records: []Record{
		{Key: a, Status: StatusRunning}, {Key: b, Status: StatusRunning}, {Key: a, Status: StatusSuccess}, {Key: a, Status: StatusRunning},
	}}, Options{})
	var got []string
	for _, tr := range res.Transitions {
		got = append(got, tr.Record.InstanceID+":"+string(tr.Previous)+">"+string(tr.Record.Status))
	}
	if want := "[:Pending>Running :Running>Success i-1:Pending>Running]"; fmt.Sprint(got) != want {
		t.Errorf("transitions %v, want %s", got, want)
	}
	if len(res.Updates) != 2 || res.Updates[0].State.Status != StatusSuccess || res.Updates[1].State.Status != StatusRunning {
		t.Errorf("updates %+v, want one per key: t-1 Success, i-1 Running", res.Updates)
	}
}

// TestComputeAnAggregateThatStopsRecurring: a recurring task's aggregate
// is numbered by stage (AggregateRun); read later as a one-time aggregate
// (run 0) it still moves on by rank, so its Stopped is announced.
func TestComputeAnAggregateThatStopsRecurring(t *testing.T) {
	k := Key{InvokeID: "t-p"}
	prev := Previous{Known: true, States: map[Key]State{k: {Status: StatusScheduled, Repeats: AggregateRun(StatusScheduled, 4)}}}
	res := Compute(prev, Snapshot{Records: []Record{{Key: k, Status: StatusStopped}}}, Options{})
	if len(res.Transitions) != 1 || res.Transitions[0].Previous != StatusScheduled || res.Updates[0].State.Repeats != 5 {
		t.Fatalf("got %+v", res)
	}
	// An instance's lower run is still an older run.
	ki := Key{InvokeID: "t-p", InstanceID: "i-1"}
	prev = Previous{Known: true, States: map[Key]State{ki: {Status: StatusSuccess, Repeats: 4}}}
	if res := Compute(prev, Snapshot{Records: []Record{{Key: ki, Status: StatusFailed, Repeats: 3}}}, Options{}); len(res.Transitions) != 0 {
		t.Errorf("an instance's older run was announced: %+v", res.Transitions)
	}
}
