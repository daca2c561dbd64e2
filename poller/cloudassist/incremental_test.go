package cloudassist

import (
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

func TestIncrementalReadsOnlyWhatCanChange(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	for range 40 {
		f.run(t, "exit 0", 0, ids[0])
	}
	running := []string{f.run(t, "hang", 0, ids[1]), f.run(t, "hang", 0, ids[1]), f.run(t, "hang", 0, ids[1])}
	eventually(t, 5*time.Second, "the first 40 to finish", func() bool {
		n := 0
		for _, e := range f.sim.Truth() {
			if e.Level == "invocation" && e.To == "Success" {
				n++
			}
		}
		return n == 40
	})
	l := f.lister(t, func(o *Options) { o.PageSize, o.Strategy, o.ResyncEvery = 10, StrategyIncremental, time.Hour })
	calls := func() int { return f.sim.Calls()["DescribeInvocations"] }

	before := calls()
	first, err := l.Snapshot(t.Context())
	if err != nil || !first.Complete || len(first.Records) != 43*2 {
		t.Fatalf("first cycle: complete=%v records=%d err=%v; want a full listing", first.Complete, len(first.Records), err)
	}
	if n := calls() - before; n != 5 {
		t.Errorf("the full listing took %d calls, want 5", n)
	}

	before = calls()
	second, err := l.Snapshot(t.Context())
	if err != nil || second.Complete {
		t.Fatalf("second cycle: complete=%v err=%v", second.Complete, err)
	}
	// The head page, Running (one page), Pending, Stopping: 4 calls.
	if n := calls() - before; n != 4 {
		t.Errorf("a steady incremental cycle took %d calls, want 4", n)
	}
	for _, id := range running {
		if r, ok := find(second, diff.Key{InvokeID: id}); !ok || r.Status != diff.StatusRunning {
			t.Errorf("active %s missing from the incremental snapshot", id)
		}
	}

	// One active invocation stops, one new one arrives.
	stop := ecs.CreateStopInvocationRequest()
	stop.InvokeId = running[0]
	if _, err := f.sdk.StopInvocation(stop); err != nil {
		t.Fatal(err)
	}
	fresh := f.run(t, "exit 3", 0, ids[0])
	eventually(t, 5*time.Second, "the stop and the new run to finish", func() bool {
		snap, err := f.lister(t, nil).Snapshot(t.Context())
		a, _ := find(snap, diff.Key{InvokeID: running[0]})
		b, _ := find(snap, diff.Key{InvokeID: fresh})
		return err == nil && a.Status == diff.StatusStopped && b.Status == diff.StatusFailed
	})
	third, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := find(third, diff.Key{InvokeID: running[0]}); r.Status != diff.StatusStopped {
		t.Errorf("the stopped invocation (looked up after leaving the active set) is %q", r.Status)
	}
	if r, _ := find(third, diff.Key{InvokeID: fresh}); r.Status != diff.StatusFailed {
		t.Errorf("the new invocation (from the head scan) is %q", r.Status)
	}
	if _, ok := find(third, diff.Key{InvokeID: running[1]}); !ok {
		t.Error("a still-active invocation is missing")
	}
	if len(third.Records) > 2*10+2*3+2 {
		t.Errorf("the incremental snapshot read %d records: more than the head page, the active and the look-ups", len(third.Records))
	}
}

func TestParseStrategy(t *testing.T) {
	for in, want := range map[string]Strategy{"": StrategyIncremental, "full": StrategyFull, "incremental": StrategyIncremental} {
		if got, err := ParseStrategy(in); err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseStrategy("lazy"); err == nil {
		t.Error("accepted an unknown strategy")
	}
}
