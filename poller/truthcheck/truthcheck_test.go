package truthcheck

import (
	"testing"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher/events"
)

func TestCheckClassifiesEachBrokenPromise(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	truth := func(id string, statuses ...string) []castest.TruthEntry {
		var out []castest.TruthEntry
		from := ""
		for i, s := range statuses {
			out = append(out, castest.TruthEntry{Time: t0.Add(time.Duration(i) * time.Second), InvokeID: id, InstanceID: "i-1", From: from, To: s})
			from = s
		}
		return out
	}
	ev := func(id, msgID, prev, status string) Published {
		return Published{MsgID: msgID, Stored: t0.Add(5 * time.Second), Event: events.Event{Data: events.Data{InvokeID: id, InstanceID: "i-1",
			PreviousStatus: events.Status(prev), Status: events.Status(status)}}}
	}
	var all []castest.TruthEntry
	for _, id := range []string{"t-ok", "t-lost", "t-dup", "t-again", "t-order", "t-prev"} {
		all = append(all, truth(id, "Pending", "Running", "Success")...)
	}
	evs := []Published{
		ev("t-ok", "a1", "", "Pending"), ev("t-ok", "a2", "Pending", "Success"), // Running unseen: fine
		ev("t-lost", "b1", "", "Running"),
		ev("t-dup", "c1", "", "Success"), ev("t-dup", "c1", "", "Success"),
		ev("t-again", "d1", "", "Running"), ev("t-again", "d2", "Running", "Success"), ev("t-again", "d3", "", "Success"),
		ev("t-order", "e1", "", "Running"), ev("t-order", "e2", "Running", "Pending"), ev("t-order", "e3", "Pending", "Success"),
		ev("t-prev", "f1", "", "Pending"), ev("t-prev", "f2", "Running", "Success"),
		ev("t-ghost", "g1", "", "Success"),
	}
	res := Check(ByRecord(all), evs, Options{MinVisible: 500 * time.Millisecond})
	want := map[Kind]int{Lost: 1, Duplicate: 2, OutOfOrder: 1, InconsistentPrevious: 2, Unknown: 1}
	for k, n := range want {
		if res.Counts[k] != n {
			t.Errorf("%s: %d, want %d", k, res.Counts[k], n)
		}
	}
	for _, v := range res.Violations {
		t.Log(v)
	}
	if res.Generated != 18 || res.Observable != 18 || res.Published != 14 || res.Records != 6 {
		t.Errorf("counts %+v", res)
	}
	if len(res.Latencies) != res.Announced || res.Announced != 10 {
		t.Errorf("%d latencies, %d announced, want 10", len(res.Latencies), res.Announced)
	}
	for _, l := range res.Latencies {
		if want := 5 - l.At.Sub(t0).Seconds(); l.Seconds != want {
			t.Errorf("latency %v of the transition at %v, want %v", l.Seconds, l.At, want)
		}
	}
}
