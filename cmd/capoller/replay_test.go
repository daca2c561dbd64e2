package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/events"
)

// replayCLI runs `capoller replay` in process and returns its stdout.
func replayCLI(t *testing.T, g *replicaGroup, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	base := []string{"replay", "--redis-url", g.args[slices.Index(g.args, "--redis-url")+1], "--key-prefix", g.args[slices.Index(g.args, "--key-prefix")+1],
		"--nats-url", g.args[slices.Index(g.args, "--nats-url")+1], "--stream", g.stream, "--subject-prefix", strings.ToLower(g.stream)}
	if code := cli(t.Context(), append(base, args...), &stdout, &stderr); code != 0 {
		t.Fatalf("replay %v exited %d: %s", args, code, stderr.String())
	}
	return stdout.String()
}

func decodeLines(t *testing.T, out string) []events.Event {
	t.Helper()
	var evs []events.Event
	for line := range strings.Lines(out) {
		e, err := events.Decode([]byte(line))
		if err != nil {
			t.Fatalf("replay printed %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// sameEvents checks that got holds exactly want's events, each shard's in
// the same order.
func sameEvents(t *testing.T, what string, got, want []events.Event) {
	t.Helper()
	byShard := func(evs []events.Event) map[string][]string {
		m := map[string][]string{}
		for _, e := range evs {
			s := e.Data.Account + "/" + e.Data.Source + "/" + e.Data.RegionID
			m[s] = append(m[s], e.ID)
		}
		return m
	}
	g, w := byShard(got), byShard(want)
	if len(got) != len(want) {
		t.Errorf("%s: %d events, want %d", what, len(got), len(want))
	}
	for s, ids := range w {
		if !slices.Equal(g[s], ids) {
			t.Errorf("%s: shard %s has %d events %v…, want %d %v…", what, s, len(g[s]), g[s][:min(3, len(g[s]))], len(ids), ids[:min(3, len(ids))])
		}
	}
	for s := range g {
		if _, ok := w[s]; !ok {
			t.Errorf("%s: events of shard %s, which has none in the window", what, s)
		}
	}
}

// TestReplayMatchesTheStreamAndTheTruth runs a replica against the
// emulator (two accounts, three regions, ECS and SWAS), with a quiet
// moment between two bursts of work, then stops it. With no poller
// running, replay's window from the history and from the stream is
// exactly the stream's events observed in it, each shard's in order;
// filters and CSV agree; a re-publish lands every event under the replay
// prefix; and --at the quiet moment gives every record's true status.
func TestReplayMatchesTheStreamAndTheTruth(t *testing.T) {
	redisURL := testenv.RedisURL(t)
	rdb, prefix := testenv.RedisAt(t, redisURL)
	g := newReplicaGroup(t, testenv.NATSURL(t), redisURL, rdb, prefix, 1)
	g.start("r1")
	burst := func(entries int) {
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); g.drive(ctx) }()
		before := len(g.sim.Truth())
		testenv.WaitFor(t, time.Minute, "a burst of work", func() error {
			if n := len(g.sim.Truth()) - before; n < entries {
				return fmt.Errorf("%d truth entries", n)
			}
			return nil
		})
		stop()
		<-done
	}
	burst(150)
	g.waitCaughtUp(time.Minute)
	quiet := time.Now()
	truthAtQuiet := testenv.TruthByRecord(g.sim.Truth())
	burst(150)
	g.waitCaughtUp(time.Minute)
	g.stopAll()

	all := testenv.StreamEvents(t, g.js, g.stream)
	var stream []events.Event
	for _, p := range all {
		stream = append(stream, p.Event)
	}
	slices.SortStableFunc(stream, func(a, b events.Event) int { return a.Data.Observed().Compare(b.Data.Observed()) })
	from, until := stream[len(stream)/3].Data.Observed(), stream[2*len(stream)/3].Data.Observed()
	var window []events.Event
	for _, p := range all { // stream order
		if at := p.Event.Data.Observed(); !at.Before(from) && at.Before(until) {
			window = append(window, p.Event)
		}
	}
	bounds := []string{"--from", from.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano)}

	sameEvents(t, "replay of the history", decodeLines(t, replayCLI(t, g, bounds...)), window)
	sameEvents(t, "replay of the stream", decodeLines(t, replayCLI(t, g, append(bounds, "--from-stream")...)), window)

	// Filters, from both sources.
	var failedSWAS []events.Event
	for _, p := range all {
		if d := p.Event.Data; d.Source == "swas" && d.Level == events.LevelInstance && d.Status == events.Failed && d.Account == "staging" {
			failedSWAS = append(failedSWAS, p.Event)
		}
	}
	if len(failedSWAS) == 0 {
		t.Fatal("the run had no failed SWAS instance in staging: the filter test would prove nothing")
	}
	filter := []string{"--source", "swas", "--level", "instance", "--status", "failed", "--account", "staging"}
	sameEvents(t, "filtered history", decodeLines(t, replayCLI(t, g, filter...)), failedSWAS)
	sameEvents(t, "filtered stream", decodeLines(t, replayCLI(t, g, append(filter, "--from-stream")...)), failedSWAS)
	one := window[0].Data
	var ofOne []events.Event
	for _, p := range all {
		if p.Event.Data.InvokeID == one.InvokeID {
			ofOne = append(ofOne, p.Event)
		}
	}
	sameEvents(t, "one invocation", decodeLines(t, replayCLI(t, g, "--invocation", one.InvokeID)), ofOne)

	rows, err := csv.NewReader(strings.NewReader(replayCLI(t, g, append(bounds, "--format", "csv")...))).ReadAll()
	if err != nil || len(rows) != len(window)+1 || rows[0][0] != "id" {
		t.Errorf("CSV: %d rows (want a header and %d), %v", len(rows), len(window), err)
	} else {
		for i, r := range rows[1:] {
			if w := window[i]; r[0] != w.ID && !slices.ContainsFunc(window, func(e events.Event) bool { return e.ID == r[0] }) {
				t.Errorf("CSV row %d: id %s is not in the window", i+1, r[0])
			}
		}
	}

	// A re-publish lands the window under the replay prefix.
	replayStream := g.stream + "_AUDIT"
	t.Cleanup(func() { _ = g.js.DeleteStream(context.Background(), replayStream) })
	replayCLI(t, g, append(bounds, "--format", "publish", "--replay-stream", replayStream, "--replay-prefix", strings.ToLower(g.stream)+"-audit")...)
	var republished []events.Event
	for _, p := range testenv.StreamEvents(t, g.js, replayStream) {
		if !strings.HasPrefix(p.Subject, strings.ToLower(g.stream)+"-audit.") {
			t.Errorf("re-published on %s", p.Subject)
		}
		republished = append(republished, p.Event)
	}
	sameEvents(t, "re-publish", republished, window)

	// --at the quiet moment: every record's true status then.
	got := map[diff.Key]recordState{}
	for line := range strings.Lines(replayCLI(t, g, "--at", quiet.Format(time.RFC3339Nano))) {
		var s recordState
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("--at printed %q: %v", line, err)
		}
		got[diff.Key{InvokeID: s.InvokeID, InstanceID: s.InstanceID}] = s
	}
	if csvAt := replayCLI(t, g, "--at", quiet.Format(time.RFC3339Nano), "--format", "csv"); !strings.HasPrefix(csvAt, "account,source,regionId,") ||
		strings.Count(csvAt, "\n") != len(got)+1 {
		t.Errorf("--at as CSV: %d lines, want a header and %d:\n%.300s", strings.Count(csvAt, "\n"), len(got), csvAt)
	}
	checked := 0
	for k, entries := range truthAtQuiet {
		want := trueStatusAt(entries, quiet)
		if want == "" {
			continue
		}
		checked++
		if s, ok := got[k]; !ok || string(s.Status) != want {
			t.Errorf("--at: %v is %q, the emulator had it %q", k, s.Status, want)
		}
	}
	if checked == 0 || len(got) != checked {
		t.Errorf("--at gave %d records, the emulator had %d then", len(got), checked)
	}
}

// trueStatusAt is a record's status at a moment, by the emulator.
func trueStatusAt(entries []castest.TruthEntry, at time.Time) string {
	status := ""
	for _, e := range entries {
		if !e.Time.After(at) {
			status = e.To
		}
	}
	return status
}

func TestReplayRefusesNonsense(t *testing.T) {
	for _, args := range [][]string{
		{"--format", "xml"},
		{"--level", "shard"},
		{"--from", "yesterday"},
		{"--from", "1h", "--until", "2h"},
		{"--at", "10m", "--from-stream"},
		{"--at", "10m", "--format", "publish"},
		{"--format", "publish", "--replay-prefix", "capoller"},
		{"--format", "publish", "--replay-prefix", "capoller.old"},
		{"--format", "publish", "--replay-stream", "CAPOLLER"},
		{"stray"},
	} {
		var stderr bytes.Buffer
		if code := cli(t.Context(), append([]string{"replay"}, args...), &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("replay %v exited %d, want 2; %s", args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "capoller replay:") {
			t.Errorf("replay %v: no clear error: %q", args, stderr.String())
		}
	}
}
