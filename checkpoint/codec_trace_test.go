package checkpoint

import (
	"bytes"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
)

// A staged batch keeps its transitions' trace context, so that a
// re-publish carries the first publish's; the history does not keep it
// (it would cost a third more per transition), and a batch without one
// is written as earlier versions wrote it.
func TestStagedBatchesKeepTheTraceContextAndHistoryDoesNot(t *testing.T) {
	tr := diff.Transition{ID: "e1", Source: diff.SourceECS, Region: "cn-hangzhou", ObservedAt: time.Unix(1700000000, 5).UTC(),
		Record: diff.Record{Key: diff.Key{InvokeID: "t-1", InstanceID: "i-1"}, Status: diff.StatusFailed, Repeats: 1, Output: "boom"}}
	plain := encodeBatch(diff.Result{Transitions: []diff.Transition{tr}})
	traced := tr
	traced.Trace = diff.TraceContext{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", State: "congo=t61rcWkgMzE"}
	staged := encodeBatch(diff.Result{Transitions: []diff.Transition{traced}})
	got, err := decodeBatch(staged)
	if err != nil || len(got.Transitions) != 1 || got.Transitions[0] != traced {
		t.Fatalf("staged batch: got %+v, %v; want %+v", got.Transitions, err, traced)
	}
	if history := encodeHistory([]diff.Transition{traced}); !bytes.Equal(history, plain) {
		t.Errorf("the history keeps the trace context: %d bytes, %d without", len(history), len(plain))
	}
	back, err := decodeBatch(plain)
	if err != nil || back.Transitions[0].Trace != (diff.TraceContext{}) || back.Transitions[0].Record.Cut != 0 {
		t.Errorf("an untraced batch decoded as %+v, %v", back.Transitions, err)
	}
}
