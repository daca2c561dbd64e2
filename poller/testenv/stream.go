package testenv

import (
	"encoding/json"
	"github.com/capoller/capoller/publisher/events"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher"
)

// Published is one message of a stream.
type Published struct {
	Subject string
	MsgID   string
	Event   publisher.Event
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
		out = append(out, Published{Subject: msg.Subject, MsgID: msg.Header.Get(jetstream.MsgIDHeader), Event: ev})
	}
	return out
}

// RecordKey is the record an event is about.
func RecordKey(d events.Data) diff.Key {
	return diff.Key{InvokeID: d.InvokeID, InstanceID: d.InstanceID}
}

// TruthByRecord groups the emulator's ground truth per record, in order.
func TruthByRecord(entries []castest.TruthEntry) map[diff.Key][]castest.TruthEntry {
	out := map[diff.Key][]castest.TruthEntry{}
	for _, e := range entries {
		k := diff.Key{InvokeID: e.InvokeID, InstanceID: e.InstanceID}
		out[k] = append(out[k], e)
	}
	return out
}

// CheckAgainstTruth holds a stream's events against the emulator's ground
// truth, record by record: no event id twice, each record's final status
// announced, its announced statuses an in-order subsequence of its true
// ones, and each previousStatus the status of the record's previous event.
func CheckAgainstTruth(t testing.TB, truth map[diff.Key][]castest.TruthEntry, evs []Published) {
	t.Helper()
	ids := map[string]bool{}
	chains := map[diff.Key][]string{}
	for _, e := range evs {
		if ids[e.MsgID] {
			t.Errorf("event %s is in the stream twice", e.MsgID)
		}
		ids[e.MsgID] = true
		k := RecordKey(e.Event.Data)
		chains[k] = append(chains[k], string(e.Event.Data.PreviousStatus+">"+e.Event.Data.Status))
	}
	for k, entries := range truth {
		chain := chains[k]
		if len(chain) == 0 {
			t.Errorf("%v: nothing announced; the emulator went %v", k, entries)
			continue
		}
		var statuses []string
		for _, e := range entries {
			statuses = append(statuses, e.To)
		}
		pos, prev := 0, ""
		for i, link := range chain {
			from, to, _ := strings.Cut(link, ">")
			if i > 0 && from != prev {
				t.Errorf("%v event %d: previousStatus %q, but the previous event said %q (%v)", k, i, from, prev, chain)
			}
			prev = to
			at := slices.Index(statuses[pos:], to)
			if at < 0 {
				t.Errorf("%v: %q is not in the rest of the true history %v (events %v)", k, to, statuses[pos:], chain)
				break
			}
			pos += at + 1
		}
		if prev != statuses[len(statuses)-1] {
			t.Errorf("%v: last announced %q, the emulator ended %q", k, prev, statuses[len(statuses)-1])
		}
	}
	for k := range chains {
		if _, ok := truth[k]; !ok {
			t.Errorf("%v: announced, but the emulator has no such record", k)
		}
	}
}
