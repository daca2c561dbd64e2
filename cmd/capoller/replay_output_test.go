package main

import (
	"bytes"
	"encoding/csv"
	"slices"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// Replay's JSON carries a failure's output fields as the history kept
// them; its CSV ends with the output's last line (safe to show, and no
// formula) and whether it was missing; and an event re-published from
// the stream keeps them.
func TestReplayCarriesTheOutput(t *testing.T) {
	s := edgeRedisStore(t)
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	at := time.Now().Add(-time.Minute).UTC()
	run := func(instance string) diff.Transition {
		return diff.Transition{Account: shard.Account, Source: shard.Source, Region: shard.Region, Previous: diff.StatusRunning, PreviousObservedAt: at,
			ObservedAt: at.Add(time.Second), Record: diff.Record{Key: diff.Key{InvokeID: "t-out", InstanceID: instance}, CommandID: "c-1",
				Status: diff.StatusFailed, Repeats: 1, ExitCode: 2}}
	}
	withOutput, missing := run("i-1"), run("i-2")
	withOutput.Record.Output = "[cut 9000 bytes]…line 1\n\x1b[31m=cmd|' /C calc'!A0\x1b[0m\u202e\r\n"
	withOutput.Record.OutputDropped, withOutput.Record.OutputURI, withOutput.Record.Cut = 512, "oss://logs/t-out/i-1", diff.FieldOutput
	missing.Record.OutputMissing = true
	trs := []diff.Transition{withOutput, missing}
	for i := range trs {
		trs[i].ID = diff.EventID(trs[i])
	}
	var updates []diff.Update
	for _, tr := range trs {
		updates = append(updates, diff.Update{Key: tr.Record.Key, State: diff.State{Status: tr.Record.Status}})
	}
	if err := s.Commit(t.Context(), shard, updates, trs); err != nil {
		t.Fatal(err)
	}
	replayed := func(format string) string {
		t.Helper()
		var out bytes.Buffer
		emit, finish, err := replayOutput(t.Context(), replayOptions{format: format}, nil, &out)
		if err != nil {
			t.Fatal(err)
		}
		if err := replayHistory(t.Context(), s, events.Filter{}, emit); err != nil {
			t.Fatal(err)
		}
		if err := finish(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}

	evs := decodeLines(t, replayed("json"))
	if len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	if d := evs[0].Data; d.Output != withOutput.Record.Output || d.OutputDropped != 512 || d.OutputURI != "oss://logs/t-out/i-1" ||
		d.OutputMissing || !slices.Contains(d.Truncated, "output") {
		t.Errorf("the output as replayed: %+v", d)
	}
	if d := evs[1].Data; !d.OutputMissing || d.Output != "" {
		t.Errorf("the missing output as replayed: %+v", d)
	}

	rows, err := csv.NewReader(bytes.NewBufferString(replayed("csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	last := func(r []string) []string { return r[len(r)-2:] }
	if h := last(rows[0]); h[0] != "outputLastLine" || h[1] != "outputMissing" {
		t.Errorf("CSV header ends with %q", h)
	}
	if r := last(rows[1]); r[0] != "'=cmd|' /C calc'!A0" || r[1] != "false" {
		t.Errorf("CSV row with output ends with %q", r)
	}
	if r := last(rows[2]); r[0] != "" || r[1] != "true" {
		t.Errorf("CSV row of a missing output ends with %q", r)
	}

	// --from-stream --format publish rebuilds the transition from the
	// event: its output goes with it.
	back := transitionOf(publisher.NewEvent(withOutput)).Record
	if r := withOutput.Record; back.Output != r.Output || back.OutputDropped != r.OutputDropped || back.OutputURI != r.OutputURI ||
		back.Cut != diff.FieldOutput {
		t.Errorf("re-published: %+v", back)
	}
	if back := transitionOf(publisher.NewEvent(missing)).Record; !back.OutputMissing {
		t.Errorf("re-published without its missing mark: %+v", back)
	}
}
