package checkpoint

import (
	"errors"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
)

// FuzzCodecRoundTrip checks that the encoding of both stores round-trips
// any string: a record's field and state (Redis fields and values, KV
// segments) and a staged batch. The corpus is kept in
// testdata/fuzz/FuzzCodecRoundTrip.
func FuzzCodecRoundTrip(f *testing.F) {
	f.Add("t-1", "", "Running", 0, int64(1), int64(0), false)
	f.Add("t-a/i-b", "i-c", "Run|ning", 3, int64(1_700_000_000_000_000_000), int64(5), true)
	f.Add("!known", "\n", "", -1, int64(0), int64(-1), true)
	f.Add("5:t", "5:", "|||", 7, int64(-5), int64(0), false)
	kv := &KV{} // its pool of gzip writers outlives one input
	f.Fuzz(func(t *testing.T, invoke, instance, status string, repeats int, observed, gone int64, isGone bool) {
		k := diff.Key{InvokeID: invoke, InstanceID: instance}
		st := diff.State{Status: diff.Status(status), Repeats: repeats, Gone: isGone}
		if observed != 0 {
			st.ObservedAt = time.Unix(0, observed).UTC()
		}
		if isGone && gone != 0 {
			st.GoneAt = time.Unix(0, gone).UTC()
		}
		field := encodeKey(k)
		if got, err := decodeKey(field); err != nil || got != k {
			t.Fatalf("key %q: encoded %q, decoded %q, %v", k, field, got, err)
		}
		value := encodeState(st)
		if got, err := decodeState(value); err != nil || got != st {
			t.Fatalf("state %+v: encoded %q, decoded %+v, %v", st, value, got, err)
		}
		seg := map[string]string{field: value, encodeKey(diff.Key{InvokeID: instance}): status}
		raw, err := kv.encodeSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeSegment(raw)
		if err != nil || len(back) != len(seg) || back[field] != value {
			t.Fatalf("segment %q: decoded %q, %v", seg, back, err)
		}
		rec := diff.Record{Key: k, CommandID: status, CommandName: invoke, Status: diff.Status(status), Repeats: repeats,
			ExitCode: observed, ErrorCode: instance, ErrorInfo: status + invoke, StartTime: st.ObservedAt, FinishTime: st.GoneAt}
		if isGone { // a run with its output, or without
			rec.Output, rec.OutputDropped, rec.OutputURI, rec.OutputMissing = status+invoke, gone, instance, repeats%2 == 0
		}
		batch := diff.Result{
			Transitions: []diff.Transition{{ID: invoke, Source: diff.Source(instance), Region: status, Record: rec,
				Previous: diff.Status(instance), PreviousObservedAt: st.GoneAt, ObservedAt: st.ObservedAt}},
			Updates: []diff.Update{{Key: k, State: st}, {Key: diff.Key{InvokeID: status}, Forget: true}},
		}
		if repeats%3 != 0 { // traced, or not
			batch.Transitions[0].Trace = diff.TraceContext{Parent: invoke, State: status}
		}
		got, err := decodeBatch(encodeBatch(batch))
		if err != nil || len(got.Transitions) != 1 || len(got.Updates) != 2 {
			t.Fatalf("batch: %+v, %v", got, err)
		}
		if got.Transitions[0] != batch.Transitions[0] || got.Updates[0] != batch.Updates[0] || got.Updates[1] != batch.Updates[1] {
			t.Fatalf("batch changed:\n got %+v\nwant %+v", got, batch)
		}
	})
}

// FuzzDecodeNeverPanics feeds arbitrary stored bytes to every decoder: a
// corrupt value is an error, never a panic.
func FuzzDecodeNeverPanics(f *testing.F) {
	f.Add([]byte("3:t-1i-1"))
	f.Add([]byte("1|2|3|Running"))
	f.Add(encodeBatch(diff.Result{Updates: []diff.Update{{Key: diff.Key{InvokeID: "t"}}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = decodeKey(string(data))
		_, _ = decodeState(string(data))
		_, _ = decodeBatch(data)
		_, _ = decodeSegment(data)
		_, _ = decodeLegacyState(string(data), time.Time{})
	})
}

// TestDecodeBatchRefusesGarbageQuickly: a corrupt staged batch is an
// error, found without allocating for counts it cannot hold.
func TestDecodeBatchRefusesGarbageQuickly(t *testing.T) {
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	for _, data := range [][]byte{junk, {0x80}, append([]byte{0xfe, 0xff, 0xff, 0x0f}, junk[:100]...)} {
		if _, err := decodeBatch(data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d bytes of garbage: %v, want ErrCorrupt", len(data), err)
		}
	}
}
