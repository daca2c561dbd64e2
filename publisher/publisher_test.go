package publisher_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/embedded"
	"github.com/capoller/capoller/publisher/events"
)

func transition(invoke, instance string, from, to diff.Status) diff.Transition {
	t := diff.Transition{
		Source: diff.SourceECS, Region: "cn-hangzhou", Previous: from,
		Record: diff.Record{Key: diff.Key{InvokeID: invoke, InstanceID: instance}, CommandID: "c-1", CommandName: "deploy.sh",
			Status: to, Repeats: 1, ExitCode: 3, ErrorCode: "ExitCodeNonzero", ErrorInfo: "the command execution exit code is not zero",
			StartTime: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), FinishTime: time.Date(2026, 11, 22, 10, 0, 2, 0, time.UTC)},
		ObservedAt:         time.Date(2026, 11, 22, 10, 0, 3, 0, time.UTC),
		PreviousObservedAt: time.Date(2026, 11, 22, 10, 0, 1, 0, time.UTC),
	}
	t.ID = diff.EventID(t)
	return t
}

func TestSubject(t *testing.T) {
	for _, tc := range []struct {
		tr   diff.Transition
		want string
	}{
		{transition("t-1", "i-1", diff.StatusRunning, diff.StatusFailed), "capoller.ecs.cn-hangzhou.instance.failed.t-1.i-1"},
		{transition("t-1", "", diff.StatusRunning, diff.StatusPartialFailed), "capoller.ecs.cn-hangzhou.invocation.partialfailed.t-1"},
		{transition("t.1>*", "i 1%", "", "Brand New"), "capoller.ecs.cn-hangzhou.instance.brand%20new.t%2E1%3E%2A.i%201%25"},
	} {
		got, err := publisher.Subject("capoller", tc.tr)
		if err != nil || got != tc.want {
			t.Errorf("Subject = %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := publisher.Subject("capoller", transition("", "i-1", "", diff.StatusRunning)); err == nil {
		t.Error("an empty invoke id made a subject")
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain-Token_09", "a.b", "*", ">", "sp ace", "100%", "日本", "%41"} {
		esc := events.EscapeToken(s)
		if strings.ContainsAny(esc, ".*> \t") {
			t.Errorf("EscapeToken(%q) = %q still has a subject metacharacter", s, esc)
		}
		back, err := events.UnescapeToken(esc)
		if err != nil || back != s {
			t.Errorf("round trip of %q gave %q, %v", s, back, err)
		}
	}
	for _, bad := range []string{"%", "%4", "%GG"} {
		if _, err := events.UnescapeToken(bad); err == nil {
			t.Errorf("UnescapeToken(%q) accepted", bad)
		}
	}
}

func TestEventShape(t *testing.T) {
	inst := publisher.NewEvent(transition("t-1", "i-1", diff.StatusRunning, diff.StatusFailed))
	raw, err := inst.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"} {
		if _, ok := m[k]; !ok {
			t.Errorf("instance event lacks %q", k)
		}
	}
	data := m["data"].(map[string]any)
	want := map[string]any{
		"source": "ecs", "regionId": "cn-hangzhou", "level": "instance", "invokeId": "t-1", "commandId": "c-1",
		"commandName": "deploy.sh", "previousStatus": "Running", "status": "Failed", "observedAt": "2026-11-22T10:00:03Z",
		"previousObservedAt": "2026-11-22T10:00:01Z", "instanceId": "i-1", "repeats": 1.0, "exitCode": 3.0,
		"errorCode": "ExitCodeNonzero", "errorInfo": "the command execution exit code is not zero",
		"startTime": "2026-11-22T10:00:00Z", "finishTime": "2026-11-22T10:00:02Z", "terminal": true,
	}
	for k, v := range want {
		if data[k] != v {
			t.Errorf("data.%s = %v, want %v", k, data[k], v)
		}
	}
	if m["specversion"] != "1.0" || m["type"] != events.TypeInstance || m["id"] != inst.ID || m["dataschema"] != events.SchemaInstance {
		t.Errorf("bad envelope: %v", m)
	}

	agg := publisher.NewEvent(transition("t-1", "", "", diff.StatusPending))
	raw, _ = agg.Marshal()
	m = map[string]any{}
	_ = json.Unmarshal(raw, &m)
	data = m["data"].(map[string]any)
	if m["type"] != events.TypeInvocation || m["dataschema"] != events.SchemaInvocation || data["previousStatus"] != "" || data["level"] != "invocation" {
		t.Errorf("bad invocation event: %v", m)
	}
	for _, k := range []string{"instanceId", "repeats", "exitCode", "startTime"} {
		if _, ok := data[k]; ok {
			t.Errorf("invocation event carries instance field %q", k)
		}
	}
}

func TestPublishIsAckedAndDeduplicated(t *testing.T) {
	stream := testenv.Name("CAPOLLER_TEST")
	prefix := strings.ToLower(stream)
	_, js := testenv.NATS(t, testenv.NATSURL(t), stream)
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // creating twice is an update, not an error
		if err := pub.EnsureStream(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	batch := []diff.Transition{
		transition("t-1", "", diff.StatusRunning, diff.StatusFailed),
		transition("t-1", "i-1", diff.StatusRunning, diff.StatusFailed),
		transition("t-2", "i-1", "", diff.StatusPending),
	}
	res, err := pub.Publish(t.Context(), batch)
	if err != nil || res.Published != 3 || res.Duplicates != 0 {
		t.Fatalf("first publish: %+v, %v", res, err)
	}
	res, err = pub.Publish(t.Context(), batch)
	if err != nil || res.Published != 0 || res.Duplicates != 3 {
		t.Fatalf("re-publish: %+v, %v (a duplicate ack must count as success)", res, err)
	}
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream holds %d messages, want 3 (%v)", info.State.Msgs, err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		msg, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		want := batch[seq-1]
		subject, _ := publisher.Subject(prefix, want)
		if msg.Subject != subject || msg.Header.Get(jetstream.MsgIDHeader) != want.ID || msg.Header.Get("Content-Type") != events.ContentType {
			t.Errorf("message %d: subject %q id %q ct %q", seq, msg.Subject, msg.Header.Get(jetstream.MsgIDHeader), msg.Header.Get("Content-Type"))
		}
		var ev publisher.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.ID != want.ID || ev.Data.Status != want.Record.Status {
			t.Errorf("message %d body: %+v, %v", seq, ev, err)
		}
	}
}

// An event staged and published by a capoller that did not name its
// schema yet (no dataschema) is the same event to JetStream: its
// re-publish after the upgrade carries the same Nats-Msg-Id and is
// dropped as a duplicate, not stored twice with two bodies.
func TestDataSchemaLeavesTheMsgIDAlone(t *testing.T) {
	es := testenv.NewEventStream(t, testenv.NATSURL(t), "CAPOLLER_SCHEMAID")
	js, pub, prefix := es.JS, es.Pub, es.Prefix
	tr := transition("t-1", "i-1", diff.StatusRunning, diff.StatusFailed)
	old := publisher.NewEvent(tr)
	if old.DataSchema != events.SchemaInstance || old.ID != tr.ID {
		t.Fatalf("event id %q dataschema %q, want the transition's id %q and %q", old.ID, old.DataSchema, tr.ID, events.SchemaInstance)
	}
	old.DataSchema = "" // as published before the schemas
	body, err := old.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "dataschema") {
		t.Fatalf("an event without a schema encodes one: %s", body)
	}
	subject, err := publisher.Subject(prefix, tr)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{"Content-Type": {events.ContentType}, jetstream.MsgIDHeader: {tr.ID}}}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	res, err := pub.Publish(t.Context(), []diff.Transition{tr})
	if err != nil || res.Published != 0 || res.Duplicates != 1 {
		t.Fatalf("re-publish with dataschema: %+v, %v; want one duplicate", res, err)
	}
}

func TestPublishFailsWhenNATSIsGone(t *testing.T) {
	srv, err := embedded.Run(embedded.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	stream := testenv.Name("CAPOLLER_GONE")
	_, js := testenv.NATS(t, srv.URL())
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: strings.ToLower(stream), AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	if _, err := pub.Publish(t.Context(), []diff.Transition{transition("t-1", "", "", diff.StatusPending)}); err == nil {
		t.Fatal("publishing to a stopped server succeeded")
	}
}

func TestOptionsValidation(t *testing.T) {
	for name, o := range map[string]publisher.Options{
		"stream with dot":  {Stream: "A.B"},
		"prefix wildcard":  {SubjectPrefix: "cap.*"},
		"empty token":      {SubjectPrefix: "cap..x"},
		"window over age":  {DuplicateWindow: time.Hour, MaxAge: time.Minute},
		"negative timeout": {AckTimeout: -1},
	} {
		if _, err := publisher.New(nil, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
