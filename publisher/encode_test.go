package publisher

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
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

func randomTransition(r *rand.Rand) diff.Transition {
	at := time.Unix(r.Int64N(1<<34), r.Int64N(1e9))
	t := diff.Transition{ID: randomString(r), Account: randomString(r), Source: diff.Source(randomString(r)), Region: randomString(r),
		Previous: diff.Status(randomString(r)), ObservedAt: at,
		Record: diff.Record{Key: diff.Key{InvokeID: randomString(r)}, CommandID: randomString(r), CommandName: randomString(r),
			Status: diff.Status(randomString(r)), ErrorCode: randomString(r), ErrorInfo: randomString(r),
			Repeats: r.IntN(5) - 1, ExitCode: r.Int64() - r.Int64(), Cut: diff.TextFields(r.IntN(8))}}
	if r.IntN(2) == 0 {
		t.Record.InstanceID = randomString(r)
	}
	if r.IntN(2) == 0 {
		t.PreviousObservedAt, t.Record.StartTime, t.Record.FinishTime = at.Add(-time.Minute), at.Add(-time.Hour), at
	}
	if r.IntN(4) == 0 {
		t.Record.Status = diff.StatusSuccess
	}
	return t
}

// The hand-written encoder and encoding/json agree byte for byte.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20_000 {
		ev := NewEvent(randomTransition(r))
		if i%7 == 0 {
			ev.Data.Truncated = append(ev.Data.Truncated, randomString(r))
		}
		checkEncoding(t, ev)
	}
	for _, s := range oddStrings {
		checkEncoding(t, NewEvent(diff.Transition{ID: s, Record: diff.Record{Key: diff.Key{InvokeID: s, InstanceID: s}, ErrorInfo: s}}))
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
	ev := NewEvent(diff.Transition{ID: "e", ObservedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Record: diff.Record{Key: diff.Key{InvokeID: "t"}}})
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
		checkEncoding(t, NewEvent(diff.Transition{ID: id, Region: text, Previous: diff.Status(text),
			Record: diff.Record{Key: diff.Key{InvokeID: id, InstanceID: text}, CommandName: text, ErrorInfo: text, ExitCode: exit, Status: diff.Status(id)}}))
	})
}
