package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/events"
)

func edgeRedisStore(t *testing.T) *checkpoint.Redis {
	t.Helper()
	client, prefix := testenv.Redis(t)
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func edgeTransition(shard diff.Shard, prev, status diff.Status, prevAt, at time.Time) diff.Transition {
	tr := diff.Transition{Account: shard.Account, Source: shard.Source, Region: shard.Region, Previous: prev, PreviousObservedAt: prevAt,
		Record: diff.Record{Key: diff.Key{InvokeID: "t-1"}, CommandID: "c-1", Status: status}, ObservedAt: at}
	tr.ID = diff.EventID(tr)
	return tr
}

// replay --at --status running: the records that were running at the
// moment. The status filter is applied to the events before the state is
// rebuilt, so a record that was Running and then Success before --at is
// printed as still Running (since its Running event).
func TestReplayAtFiltersStatesNotEvents(t *testing.T) {
	s := edgeRedisStore(t)
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	t0 := time.Now().Add(-time.Minute).UTC()
	for _, tr := range []diff.Transition{
		edgeTransition(shard, "", diff.StatusRunning, time.Time{}, t0),
		edgeTransition(shard, diff.StatusRunning, diff.StatusSuccess, t0, t0.Add(10*time.Second)),
	} {
		if err := s.Commit(t.Context(), shard, []diff.Update{{Key: tr.Record.Key, State: diff.State{Status: tr.Record.Status}}}, []diff.Transition{tr}); err != nil {
			t.Fatal(err)
		}
	}
	var out, notes bytes.Buffer
	f := events.Filter{Statuses: []events.Status{diff.StatusRunning}}
	if err := replayAt(t.Context(), s, f, t0.Add(20*time.Second), "json", &out, &notes); err != nil {
		t.Fatal(err)
	}
	if notes.Len() != 0 {
		t.Errorf("a moment inside the history: %q", notes.String())
	}
	for line := range strings.Lines(out.String()) {
		var st recordState
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			t.Fatal(err)
		}
		t.Errorf("--at (after the Success) --status running printed %s %s since %s; it was %s then", st.InvokeID, st.Status, st.Since, diff.StatusSuccess)
	}
}

// Replay's window starts at the first commit stamped (by the Redis
// server's clock) at or after --from, assuming "a commit comes after what
// it observed". observedAt is the poller's clock: a poller whose clock is
// ahead of Redis's by more than its publish latency commits events at an
// earlier stream time than they were observed, and replay --from misses
// them though they are inside the window.
func TestReplayFromAllowsForAPollerClockAhead(t *testing.T) {
	s := edgeRedisStore(t)
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	observed := time.Now().Add(2 * time.Second).UTC() // the poller's clock is 2 s ahead
	tr := edgeTransition(shard, "", diff.StatusRunning, time.Time{}, observed)
	if err := s.Commit(t.Context(), shard, []diff.Update{{Key: tr.Record.Key, State: diff.State{Status: tr.Record.Status}}}, []diff.Transition{tr}); err != nil {
		t.Fatal(err)
	}
	f := events.Filter{From: observed.Add(-time.Second)}
	var got []string
	err := replayHistory(t.Context(), s, f, func(e events.Event, _ []byte, _ *diff.Transition) error {
		got = append(got, e.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Errorf("--from %s: %d events, want the one observed at %s", events.Stamp(f.From), len(got), events.Stamp(observed))
	}
}

// Text from the API cannot become a spreadsheet formula in replay's CSV,
// and watch drops what could disguise a line.
func TestOutputsDisarmHostileText(t *testing.T) {
	repeats, exit := 1, int64(-1)
	e := events.Event{ID: "e", Data: events.Data{CommandName: "=HYPERLINK(\"http://x\")", ErrorCode: "+cmd", InvokeID: "@t", InstanceID: "-i",
		Level: events.LevelInstance, Status: "Failed", Repeats: &repeats, ExitCode: &exit}}
	row := csvRow(e)
	for _, cell := range row {
		if cell != "" && strings.ContainsRune("=+@", rune(cell[0])) || strings.HasPrefix(cell, "-i") {
			t.Errorf("CSV cell %q could run as a formula", cell)
		}
	}
	if !slices.Contains(row, "-1") {
		t.Errorf("the exit code lost its sign: %v", row)
	}
	if got := oneLine("evil\u202etxt.exe\u200b done\x1b[2J", 80); got != "eviltxt.exe done" {
		t.Errorf("oneLine kept invisible or control characters: %q", got)
	}
}

// TestCSVCarriesErrorInfo: the CSV has the API's errorInfo beside its
// errorCode, disarmed like every text from the API, one cell per column.
func TestCSVCarriesErrorInfo(t *testing.T) {
	e := events.Event{ID: "e", Data: events.Data{InvokeID: "t-1", InstanceID: "i-1", Level: events.LevelInstance, Status: "Failed",
		ErrorCode: "InstanceNotExists", ErrorInfo: "=the specified instance does not exist"}}
	header, row := csvHeader(), csvRow(e)
	i := slices.Index(header, "errorInfo")
	if len(row) != len(header) || i < 0 || header[i-1] != "errorCode" || row[i] != "'=the specified instance does not exist" {
		t.Errorf("header %v\nrow %v", header, row)
	}
}

// TestReplayAtBeforeTheHistorySaysSo: --at before the first event has no
// state to print, and says so, naming the first event's time, where it
// printed nothing.
func TestReplayAtBeforeTheHistorySaysSo(t *testing.T) {
	s := edgeRedisStore(t)
	shard := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	t0 := time.Now().Add(-time.Minute).UTC()
	var out, notes bytes.Buffer
	if err := replayAt(t.Context(), s, events.Filter{}, t0, "json", &out, &notes); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notes.String(), "the history holds no event") {
		t.Errorf("an empty history: %q", notes.String())
	}
	tr := edgeTransition(shard, "", diff.StatusRunning, time.Time{}, t0)
	if err := s.Commit(t.Context(), shard, []diff.Update{{Key: tr.Record.Key, State: diff.State{Status: tr.Record.Status}}}, []diff.Transition{tr}); err != nil {
		t.Fatal(err)
	}
	notes.Reset()
	if err := replayAt(t.Context(), s, events.Filter{}, t0.Add(-time.Hour), "json", &out, &notes); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || !strings.Contains(notes.String(), "is before the history's first event ("+events.Stamp(t0)+")") {
		t.Errorf("--at an hour before the first event: out %q, notes %q", out.String(), notes.String())
	}
}
