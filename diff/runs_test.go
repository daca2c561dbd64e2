package diff

import (
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
	kept := Key{InvokeID: "t-kept"}
	old := Key{InvokeID: "t-old"}
	oldInst := Key{InvokeID: "t-old", InstanceID: "i-1"}
	already := Key{InvokeID: "t-gone"}
	ups := Expire(map[Key]State{
		oldInst: {Status: StatusRunning, Repeats: 1, ObservedAt: t0},
		old:     {Status: StatusSuccess, ObservedAt: t0},
		already: {Status: StatusSuccess, ObservedAt: t0, Gone: true},
	})
	if len(ups) != 2 || ups[0].Key != old || ups[1].Key != oldInst {
		t.Fatalf("updates: %+v", ups)
	}
	for _, u := range ups {
		if !u.State.Gone || !u.State.ObservedAt.Equal(t0) {
			t.Errorf("tombstone of %v: %+v", u.Key, u.State)
		}
	}
	if ups[0].State.Status != StatusSuccess || ups[1].State.Status != StatusRunning {
		t.Error("a tombstone lost the record's last status")
	}
	// A tombstoned record that shows up again is neither new nor changed.
	prev := Previous{Known: true, States: map[Key]State{kept: {Status: StatusSuccess, ObservedAt: t0}}}
	for _, u := range ups {
		prev.States[u.Key] = u.State
	}
	back := Snapshot{Records: []Record{{Key: kept, Status: StatusSuccess}, {Key: old, Status: StatusFailed}, {Key: oldInst, Status: StatusFailed, Repeats: 1}}}
	if res := Compute(prev, back, Options{}); len(res.Transitions) != 0 || len(res.Updates) != 0 {
		t.Errorf("a tombstoned record came back: %+v", res)
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
