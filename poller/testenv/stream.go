package testenv

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/truthcheck"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// Published is one message of a stream.
type Published struct {
	Subject string
	MsgID   string
	Event   publisher.Event
	Data    []byte // the body as published
}

// StreamEvents reads every message of a stream, in order.
func StreamEvents(t testing.TB, js jetstream.JetStream, stream string) []Published {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []Published
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev publisher.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatalf("message %d is not an event: %v", seq, err)
		}
		out = append(out, Published{Subject: msg.Subject, MsgID: msg.Header.Get(jetstream.MsgIDHeader), Event: ev, Data: msg.Data})
	}
	return out
}

// RecordKey is the record an event is about.
func RecordKey(d events.Data) diff.Key { return truthcheck.RecordKey(d) }

// TruthByRecord groups the emulator's ground truth per record, in order.
func TruthByRecord(entries []castest.TruthEntry) map[diff.Key][]castest.TruthEntry {
	return truthcheck.ByRecord(entries)
}

// CheckAgainstTruth holds a stream's events against the emulator's ground
// truth, record by record (see package truthcheck, which `capoller chaos`
// uses too): no event id twice, each record's final status announced, its
// announced statuses an in-order subsequence of its true ones, and each
// previousStatus the status of the record's previous event.
func CheckAgainstTruth(t testing.TB, truth map[diff.Key][]castest.TruthEntry, evs []Published) {
	t.Helper()
	pubs := make([]truthcheck.Published, len(evs))
	for i, e := range evs {
		pubs[i] = truthcheck.Published{MsgID: e.MsgID, Event: e.Event}
	}
	for _, v := range truthcheck.Check(truth, pubs, truthcheck.Options{}).Violations {
		t.Error(v)
	}
}

// EventStream is a test's stream of capoller's events, created, with a
// publisher on it.
type EventStream struct {
	JS     jetstream.JetStream
	Pub    *publisher.NATS
	Name   string // the stream, unique to the test (see Name)
	Prefix string // its subject prefix: Name in lower case
}

// NewEventStream creates, on the NATS server at url, a stream named after
// base as capoller creates its own (deleted when the test ends), and a
// publisher of events on it.
func NewEventStream(t testing.TB, url, base string) EventStream {
	t.Helper()
	es := EventStream{Name: Name(base)}
	es.Prefix = strings.ToLower(es.Name)
	_, es.JS = NATS(t, url, es.Name)
	pub, err := publisher.New(es.JS, publisher.Options{Stream: es.Name, SubjectPrefix: es.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	es.Pub = pub
	return es
}
