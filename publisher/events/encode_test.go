package events

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// oddStrings are the bytes JSON escapes, or that encoding/json treats
// specially: controls, quotes, HTML, invalid UTF-8, U+2028/9, multi-byte.
var oddStrings = []string{"", "plain", `q"uo\te`, "<a href='x'>&amp;</a>", "\x00\x01\b\f\n\r\t\x1f\x7f", "\xff\xfe bad \xc3",
	"line\u2028sep\u2029", "日本語のコマンド", "emoji 🚀", "\xed\xa0\x80 surrogate", "%2E.*>", "trunc\xe6\x97"}

func randomString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return oddStrings[r.IntN(len(oddStrings))]
	}
	b := make([]byte, r.IntN(40))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func randomEvent(r *rand.Rand) Event {
	at := time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC()
	e := Event{SpecVersion: "1.0", ID: randomString(r), Source: randomString(r), Type: TypeInvocation, Subject: randomString(r),
		Time: at, DataContentType: "application/json", Data: Data{
			Account: randomString(r), Source: randomString(r), RegionID: randomString(r), Level: Level(randomString(r)),
			InvokeID: randomString(r), CommandID: randomString(r), CommandName: randomString(r),
			PreviousStatus: Status(randomString(r)), Status: Status(randomString(r)), Terminal: r.IntN(2) == 0,
			ObservedAt: Stamp(at), PreviousObservedAt: randomString(r)}}
	if r.IntN(2) == 0 {
		e.DataSchema = randomString(r) // empty in an event published before the schemas: omitted, as encoding/json omits it
	}
	if r.IntN(2) == 0 {
		repeats, exit := r.IntN(5)-1, r.Int64()-r.Int64()
		e.Type, e.Data.InstanceID, e.Data.Repeats, e.Data.ExitCode = TypeInstance, randomString(r), &repeats, &exit
		e.Data.ErrorCode, e.Data.ErrorInfo, e.Data.StartTime, e.Data.FinishTime = randomString(r), randomString(r), randomString(r), Stamp(at)
	}
	for range r.IntN(3) {
		e.Data.Truncated = append(e.Data.Truncated, randomString(r))
	}
	if r.IntN(2) == 0 { // the trace context, after data
		e.TraceParent = randomString(r)
		if r.IntN(2) == 0 {
			e.TraceState = randomString(r)
		}
	}
	return e
}

// The hand-written encoder and encoding/json agree byte for byte.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20_000 {
		checkEncoding(t, randomEvent(r))
	}
	for _, s := range oddStrings {
		checkEncoding(t, Event{ID: s, Subject: s, Data: Data{InvokeID: s, InstanceID: s, ErrorInfo: s, Truncated: []string{s}},
			TraceParent: s, TraceState: s})
	}
}

func checkEncoding(t *testing.T, ev Event) {
	t.Helper()
	want, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := ev.appendJSON(nil)
	if !ok || !bytes.Equal(got, want) {
		t.Fatalf("event %q:\n got %s\nwant %s", ev.ID, got, want)
	}
}

// A time encoding/json refuses is refused the same way.
func TestAppendJSONLeavesOddYearsToEncodingJSON(t *testing.T) {
	ev := Event{ID: "e", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, ok := ev.appendJSON(nil); ok {
		t.Fatal("the year 10000 was encoded")
	}
	if _, err := ev.Marshal(); err == nil {
		t.Fatal("Marshal accepted the year 10000")
	}
}

func FuzzAppendJSON(f *testing.F) {
	for _, s := range oddStrings {
		f.Add(s, s, int64(0))
	}
	f.Fuzz(func(t *testing.T, id, text string, exit int64) {
		ev := Event{ID: id, Subject: text, Data: Data{RegionID: text, PreviousStatus: Status(text), InvokeID: id, InstanceID: text,
			CommandName: text, ErrorInfo: text, ExitCode: &exit, Status: Status(id)}, TraceParent: text}
		checkEncoding(t, ev)
	})
}
