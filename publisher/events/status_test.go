package events_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// subjectMatches is NATS's subject matching: "*" one token, ">" the rest.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

// A status capoller does not know is passed on as the API sent it, and the
// publisher escapes it in the subject (events.Token of its lower case).
// Filter.Subject must give a subject that lets such an event through.
func TestFilterSubjectEscapesUnknownStatuses(t *testing.T) {
	for _, status := range []diff.Status{"Needs Reboot", "Weird.Status", diff.Status(strings.Repeat("VeryLongStatus", 20))} {
		tr := diff.Transition{ID: "e1", Source: diff.SourceECS, Region: "cn-hangzhou", ObservedAt: time.Now(),
			Record: diff.Record{Key: diff.Key{InvokeID: "t-1", InstanceID: "i-1"}, Status: status}}
		subject, err := publisher.Subject("capoller", tr)
		if err != nil {
			t.Fatal(err)
		}
		f := events.Filter{Statuses: []events.Status{diff.NormalizeStatus(string(status))}}
		if !f.Match(publisher.NewEvent(tr)) {
			t.Fatalf("%q: Match refuses the event", status)
		}
		if filter := f.Subject("capoller"); !subjectMatches(filter, subject) {
			t.Errorf("status %q: filter subject %q does not match the published subject %q", status, filter, subject)
		}
	}
}

// "Statuses compare without regard to case and spelling": so too an
// unknown status, which the subject already folds to lower case.
func TestFilterMatchesUnknownStatusesInAnyCase(t *testing.T) {
	repeats := 1
	e := events.Event{SpecVersion: "1.0", ID: "e1", Type: events.TypeInstance, Data: events.Data{Source: "ecs", RegionID: "r",
		Level: events.LevelInstance, InvokeID: "t-1", InstanceID: "i-1", Status: "NeedsReboot", Repeats: &repeats}}
	f := events.Filter{Statuses: []events.Status{diff.NormalizeStatus("needsreboot")}}
	if !f.Match(e) {
		t.Errorf("filter status %q does not match event status %q", f.Statuses[0], e.Data.Status)
	}
}

// The hand-written encoder "must equal encoding/json byte for byte",
// including refusing what encoding/json refuses.
func TestMarshalRefusesAnOffsetOfADay(t *testing.T) {
	e := events.Event{SpecVersion: "1.0", ID: "e1", Type: events.TypeInvocation,
		Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("odd", 24*3600))}
	want, wantErr := json.Marshal(e)
	got, gotErr := e.Marshal()
	if (wantErr == nil) != (gotErr == nil) || !bytes.Equal(got, want) {
		t.Errorf("Marshal = %s, %v; encoding/json = %s, %v", got, gotErr, want, wantErr)
	}
}
