package poller

import (
	"fmt"
	"testing"
	"time"
)

// TestHintQueueCoalescesAndSpaces: hints for one invocation coalesce while
// one waits; an invocation is looked up at most once per Spacing; the
// shard's rate bounds the look-ups; a full queue drops.
func TestHintQueueCoalescesAndSpaces(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	q := newHintQueue(HintOptions{Spacing: time.Second, PerSecond: 0.5, Burst: 2, Batch: 2, MaxPending: 3})
	h := func(id string, at time.Duration) Hint { return Hint{InvokeID: id, Received: t0.Add(at)} }
	if q.add(h("t-1", 0)) != hintQueued || q.add(h("t-1", 1)) != hintCoalesced {
		t.Fatal("a second hint for a waiting invocation is not coalesced")
	}
	got, _ := q.due(t0)
	if len(got) != 1 || got[0].InvokeID != "t-1" || got[0].Received != t0 {
		t.Fatalf("due %v, want t-1's first hint", got)
	}
	// Within Spacing, t-1 waits; t-2 and t-3 go, two at a time (Batch).
	q.add(h("t-1", 10*time.Millisecond))
	q.add(h("t-2", 20*time.Millisecond))
	q.add(h("t-3", 30*time.Millisecond))
	if q.add(h("t-4", 40*time.Millisecond)) != hintDropped {
		t.Error("a hint beyond MaxPending was queued")
	}
	got, next := q.due(t0.Add(100 * time.Millisecond))
	if fmt.Sprint(ids(got)) != "[t-2 t-3]" || next <= 0 {
		t.Errorf("due %v (next %v), want t-2 and t-3, and more to come", ids(got), next)
	}
	// The burst of 2 is spent: the rate holds t-1 back though it is due.
	if got, next := q.due(t0.Add(1100 * time.Millisecond)); len(got) != 0 || next <= 0 {
		t.Errorf("due %v (next %v) beyond the rate", ids(got), next)
	}
	if got, _ := q.due(t0.Add(2100 * time.Millisecond)); fmt.Sprint(ids(got)) != "[t-1]" {
		t.Errorf("due %v, want t-1 once the rate allows", ids(got))
	}
	if !q.wasHinted("t-4") || q.wasHinted("t-9") {
		t.Error("the hinted invocations are not remembered")
	}
}

func ids(hs []Hint) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.InvokeID)
	}
	return out
}

// TestAFailedLookUpIsTriedAgain: the hints of a look-up that failed (a
// throttled call, an outage) are queued again after the spacing, with
// their first arrival kept for the lag, lookUpTries times in all; a hint
// that came meanwhile stands for the retry.
func TestAFailedLookUpIsTriedAgain(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	q := newHintQueue(HintOptions{Spacing: time.Second, PerSecond: 100, Burst: 100})
	q.add(Hint{InvokeID: "t-1", Received: t0})
	at := t0
	for try := 1; try <= lookUpTries; try++ {
		got, _ := q.due(at)
		if len(got) != 1 || got[0].Received != t0 {
			t.Fatalf("try %d: due %v, want t-1 as first hinted", try, got)
		}
		if early, _ := q.due(at.Add(500 * time.Millisecond)); len(early) != 0 {
			t.Fatalf("try %d: due again within the spacing", try)
		}
		queued := q.retry(got)
		if want := map[bool]int{true: 1, false: 0}[try < lookUpTries]; queued != want {
			t.Fatalf("after failed try %d, %d queued again, want %d", try, queued, want)
		}
		at = at.Add(1100 * time.Millisecond)
	}
	if got, next := q.due(at); len(got) != 0 || next != 0 {
		t.Errorf("after %d tries, due %v (next %v): it should be left to the listing", lookUpTries, got, next)
	}

	q.add(Hint{InvokeID: "t-2", Received: t0})
	got, _ := q.due(at)
	q.add(Hint{InvokeID: "t-2", Received: t0.Add(time.Second)}) // came while it was looked up
	if n := q.retry(got); n != 0 {
		t.Errorf("a retry was queued beside a waiting hint for the same invocation (%d)", n)
	}
}
