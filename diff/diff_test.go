package diff

import (
	"testing"
	"time"
)

func TestNormalizeStatus(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Running", "Running"},
		{"running", "Running"},
		{" running ", "Running"},
		{"finished", "Finished"},
		{"success", "Success"},
		{"SUCCESS", "Success"},
		{"Partial Failed", "PartialFailed"},
		{"partialfailed", "PartialFailed"},
		{"Canceled", "Cancelled"},
		{"\tStopping\n", "Stopping"},
		{"", ""},
		{"   ", ""},
		{"Quarantined", "Quarantined"},
		{"  Brand New ", "Brand New"},
	} {
		if got := NormalizeStatus(tc.in); string(got) != tc.want {
			t.Errorf("NormalizeStatus(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStatusTerminal(t *testing.T) {
	terminal := []Status{StatusSuccess, StatusFailed, StatusPartialFailed, StatusStopped, StatusFinished,
		StatusInvalid, StatusAborted, StatusError, StatusTimeout, StatusCancelled, StatusTerminated}
	open := []Status{StatusPending, StatusScheduled, StatusRunning, StatusStopping, "Quarantined", ""}
	for _, s := range terminal {
		if !s.Terminal() || !s.Known() {
			t.Errorf("%q: want terminal and known", s)
		}
	}
	for _, s := range open {
		if s.Terminal() {
			t.Errorf("%q: want not terminal", s)
		}
	}
	if Status("Quarantined").Known() {
		t.Error("an unknown status reported as known")
	}
}

func TestCompute(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(5 * time.Second)
	inv := Key{InvokeID: "t-1"}
	i1 := Key{InvokeID: "t-1", InstanceID: "i-1"}
	i2 := Key{InvokeID: "t-1", InstanceID: "i-2"}
	rec := func(k Key, s Status, repeats int) Record {
		return Record{Key: k, CommandID: "c-1", Status: s, Repeats: repeats}
	}
	type change struct {
		key      Key
		from, to Status
	}
	for _, tc := range []struct {
		name    string
		prev    Previous
		records []Record
		opts    Options
		want    []change
		updates int
	}{
		{
			name:    "first start baselines",
			prev:    Previous{},
			records: []Record{rec(i1, StatusRunning, 1), rec(inv, StatusRunning, 0)},
			updates: 2,
		},
		{
			name:    "first start with emit",
			prev:    Previous{},
			records: []Record{rec(i1, StatusRunning, 1), rec(inv, StatusRunning, 0)},
			opts:    Options{Initial: InitialEmit},
			want:    []change{{inv, "", StatusRunning}, {i1, "", StatusRunning}},
			updates: 2,
		},
		{
			name:    "new record on a known shard is announced",
			prev:    Previous{Known: true, States: map[Key]State{}},
			records: []Record{rec(i2, StatusPending, 0)},
			want:    []change{{i2, "", StatusPending}},
			updates: 1,
		},
		{
			name: "unchanged records give nothing",
			prev: Previous{Known: true, States: map[Key]State{
				inv: {Status: StatusRunning, ObservedAt: t0},
				i1:  {Status: StatusRunning, Repeats: 1, ObservedAt: t0},
			}},
			records: []Record{rec(inv, StatusRunning, 0), rec(i1, StatusRunning, 1)},
		},
		{
			name: "status change at both levels",
			prev: Previous{Known: true, States: map[Key]State{
				inv: {Status: StatusRunning, ObservedAt: t0},
				i1:  {Status: StatusRunning, Repeats: 1, ObservedAt: t0},
				i2:  {Status: StatusRunning, Repeats: 1, ObservedAt: t0},
			}},
			records: []Record{rec(i2, StatusFailed, 1), rec(i1, StatusSuccess, 1), rec(inv, StatusPartialFailed, 0)},
			want:    []change{{inv, StatusRunning, StatusPartialFailed}, {i1, StatusRunning, StatusSuccess}, {i2, StatusRunning, StatusFailed}},
			updates: 3,
		},
		{
			name:    "a new run with the same status is a change",
			prev:    Previous{Known: true, States: map[Key]State{i1: {Status: StatusSuccess, Repeats: 1, ObservedAt: t0}}},
			records: []Record{rec(i1, StatusSuccess, 2)},
			want:    []change{{i1, StatusSuccess, StatusSuccess}},
			updates: 1,
		},
		{
			name:    "a stale read never regresses a finished run",
			prev:    Previous{Known: true, States: map[Key]State{i1: {Status: StatusSuccess, Repeats: 1, ObservedAt: t0}}},
			records: []Record{rec(i1, StatusRunning, 1)},
		},
		{
			name:    "an unknown status is reported",
			prev:    Previous{Known: true, States: map[Key]State{i1: {Status: StatusRunning, Repeats: 1, ObservedAt: t0}}},
			records: []Record{rec(i1, "Quarantined", 1)},
			want:    []change{{i1, StatusRunning, "Quarantined"}},
			updates: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := Snapshot{Source: SourceECS, Region: "cn-hangzhou", ObservedAt: t1, Records: tc.records}
			res := Compute(tc.prev, snap, tc.opts)
			if len(res.Updates) != tc.updates {
				t.Errorf("updates = %d, want %d", len(res.Updates), tc.updates)
			}
			if len(res.Transitions) != len(tc.want) {
				t.Fatalf("transitions = %+v, want %+v", res.Transitions, tc.want)
			}
			for i, w := range tc.want {
				got := res.Transitions[i]
				if got.Record.Key != w.key || got.Previous != w.from || got.Record.Status != w.to {
					t.Errorf("transition %d = %v %q->%q, want %v %q->%q", i, got.Record.Key, got.Previous, got.Record.Status, w.key, w.from, w.to)
				}
				if got.ObservedAt != t1 || got.Source != SourceECS || got.Region != "cn-hangzhou" {
					t.Errorf("transition %d: wrong envelope %+v", i, got)
				}
				if w.from != "" && got.PreviousObservedAt != t0 {
					t.Errorf("transition %d: previousObservedAt = %v, want %v", i, got.PreviousObservedAt, t0)
				}
				if got.ID != EventID(got) || len(got.ID) != 32 {
					t.Errorf("transition %d: bad id %q", i, got.ID)
				}
			}
			// Applying the updates and replaying the snapshot yields nothing.
			next := Previous{Known: true, States: map[Key]State{}}
			for k, v := range tc.prev.States {
				next.States[k] = v
			}
			for _, u := range res.Updates {
				next.States[u.Key] = u.State
			}
			if again := Compute(next, snap, tc.opts); len(again.Transitions) != 0 || len(again.Updates) != 0 {
				t.Errorf("replay produced %d transitions, %d updates", len(again.Transitions), len(again.Updates))
			}
		})
	}
}

func TestEventIDIsDeterministicAndDistinct(t *testing.T) {
	base := Transition{Source: SourceECS, Region: "cn-hangzhou", Previous: StatusRunning,
		Record:     Record{Key: Key{InvokeID: "t-1", InstanceID: "i-1"}, Status: StatusSuccess, Repeats: 1},
		ObservedAt: time.Unix(1, 0)}
	same := base
	same.ObservedAt = time.Unix(99, 0) // observation time is not part of the identity
	same.Record.ExitCode = 7
	if EventID(base) != EventID(same) {
		t.Error("the id depends on something other than what changed")
	}
	variants := []func(*Transition){
		func(t *Transition) { t.Source = SourceSWAS },
		func(t *Transition) { t.Region = "cn-beijing" },
		func(t *Transition) { t.Record.InstanceID = "" },
		func(t *Transition) { t.Record.InvokeID = "t-2" },
		func(t *Transition) { t.Record.Repeats = 2 },
		func(t *Transition) { t.Previous = StatusPending },
		func(t *Transition) { t.Record.Status = StatusFailed },
		// Field boundaries are unambiguous.
		func(t *Transition) { t.Record.InvokeID, t.Record.InstanceID = "t-1i", "-1" },
	}
	seen := map[string]bool{EventID(base): true}
	for i, mutate := range variants {
		v := base
		mutate(&v)
		id := EventID(v)
		if seen[id] {
			t.Errorf("variant %d collides", i)
		}
		seen[id] = true
	}
}

func TestComputeUnchangedDoesNotAllocate(t *testing.T) {
	prev := Previous{Known: true, States: map[Key]State{}}
	var recs []Record
	for i := range 1000 {
		k := Key{InvokeID: "t-" + string(rune('a'+i%26)), InstanceID: "i-" + string(rune('a'+i/26))}
		prev.States[k] = State{Status: StatusSuccess, Repeats: 1}
		recs = append(recs, Record{Key: k, Status: StatusSuccess, Repeats: 1})
	}
	snap := Snapshot{Source: SourceECS, Region: "r", Records: recs}
	if allocs := testing.AllocsPerRun(10, func() { Compute(prev, snap, Options{}) }); allocs != 0 {
		t.Errorf("Compute on an unchanged snapshot allocated %.0f times", allocs)
	}
}

func TestParseInitial(t *testing.T) {
	if p, err := ParseInitial(""); err != nil || p != InitialBaseline {
		t.Errorf(`ParseInitial("") = %q, %v`, p, err)
	}
	if p, err := ParseInitial("emit"); err != nil || p != InitialEmit {
		t.Errorf(`ParseInitial("emit") = %q, %v`, p, err)
	}
	if _, err := ParseInitial("flood"); err == nil {
		t.Error("ParseInitial accepted an unknown policy")
	}
}
