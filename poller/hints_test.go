package poller_test

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// TestASpacedHintIsLookedUpWithoutAnotherEvent: a second hint for an
// invocation that was just looked up waits for its spacing, and is then
// looked up on its own: no other hint, and no cycle of the listing (the
// interval is an hour), has to come and wake the poller.
func TestASpacedHintIsLookedUpWithoutAnotherEvent(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	src, st, pub := h.parts(10)
	var cycles atomic.Int64
	p := h.poller(src, st, pub, func(o *poller.Options) {
		o.Interval, o.Metrics = time.Hour, metrics
		o.Hints = &poller.HintOptions{Spacing: 200 * time.Millisecond}
		o.OnCycle = func(poller.Report) { cycles.Add(1) }
	})
	kill := startPoller(t, p)
	defer kill()
	eventually(t, 5*time.Second, "the first cycle", func() bool { return cycles.Load() > 0 })
	id := h.run("echo hi", 0, h.instances[0])
	lookedUp := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "capoller_hint_invocations_looked_up_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	if !p.Hint(poller.Hint{InvokeID: id}) {
		t.Fatal("the first hint was not queued")
	}
	eventually(t, 5*time.Second, "the first look-up", func() bool { return lookedUp() == 1 })
	if !p.Hint(poller.Hint{InvokeID: id}) { // within the spacing: it waits
		t.Fatal("the second hint was not queued")
	}
	eventually(t, 5*time.Second, "the spaced look-up, with nothing else to wake the poller", func() bool { return lookedUp() == 2 })
}

// TestAnECSResultsLookUpReadsAsItsListingDoes: an ecs-results shard looks
// an invocation up with the records its own listing would have (the
// aggregate derived from the results, the instances as they are), so that
// the listing after it announces nothing twice and nothing back; it
// leaves a periodic task, whose runs come from the history the listing
// reads, and an id the API does not know to the listing. Through the
// poller, a hint is announced at an hour's interval.
func TestAnECSResultsLookUpReadsAsItsListingDoes(t *testing.T) {
	h := newHarness(t)
	lister, err := cloudassist.NewECSResults(h.listerOptions(10))
	if err != nil {
		t.Fatal(err)
	}
	p := h.poller(lister, h.store(), h.publisher(h.js), func(o *poller.Options) {
		o.Interval, o.Hints = time.Hour, &poller.HintOptions{}
	})
	mustRunOnce(t, p)
	kill := startPoller(t, p)
	defer kill()

	failed := h.run("echo half; exit 3", 0, h.instances[0], h.instances[1])
	req := ecs.CreateRunCommandRequest()
	req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo tick", &[]string{h.instances[2]}
	req.RepeatMode, req.Frequency = "Period", "rate(1s)"
	periodic, err := h.sdk.RunCommand(req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both runs of the one-time task to end", func() bool {
		return len(finishedRuns(h.sim, failed, "Failed")) == 2
	})

	looked, err := lister.LookUp(t.Context(), []string{failed, periodic.InvokeId, "t-nobody-knows"})
	if err != nil {
		t.Fatal(err)
	}
	listing, err := lister.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if looked.Complete {
		t.Error("a look-up's snapshot says it is complete")
	}
	listed := map[diff.Key]diff.Record{}
	for _, r := range listing.Records {
		listed[r.Key] = r
	}
	if len(looked.Records) != 3 {
		t.Fatalf("the look-up returned %d records, want the aggregate and two instances of %s only: %+v", len(looked.Records), failed, looked.Records)
	}
	for _, r := range looked.Records {
		if r.InvokeID != failed {
			t.Errorf("the look-up returned a record of %s", r.InvokeID)
		}
		if l, ok := listed[r.Key]; !ok || !reflect.DeepEqual(l, r) {
			t.Errorf("looked up %+v\n           the listing has %+v", r, l)
		}
		if r.Status != diff.StatusFailed {
			t.Errorf("%v is %s, want Failed", r.Key, r.Status)
		}
	}

	if !p.Hint(poller.Hint{InvokeID: failed}) {
		t.Fatal("an ecs-results poller did not queue a hint")
	}
	eventually(t, 10*time.Second, "the hinted invocation's events, at an hour's interval", func() bool {
		n := 0
		for _, e := range h.events() {
			if e.Event.Data.InvokeID == failed && e.Event.Data.Status == diff.StatusFailed {
				n++
			}
		}
		return n == 3
	})
}

// TestALookUpTakesNothingTheAPISlipsIn: an API that ignores the InvokeId
// filter of a look-up, and answers with another invocation's rows (a
// failure, at that), makes the look-up announce nothing of it: neither
// DescribeInvocations' answer for ecs-results' first question (is the task
// one-time?) nor DescribeInvocationResults' rows. The hinted invocation is
// then left to the listing, as an unknown one is.
func TestALookUpTakesNothingTheAPISlipsIn(t *testing.T) {
	h := newHarness(t)
	lister, err := cloudassist.NewECSResults(h.listerOptions(10))
	if err != nil {
		t.Fatal(err)
	}
	hinted := h.run("echo fine", 0, h.instances[0])
	eventually(t, 10*time.Second, "the hinted run to end", func() bool {
		return len(finishedRuns(h.sim, hinted, "Success")) == 1
	})
	const other = `{"InvokeId":"t-slipped-in","InstanceId":"i-slipped","InvocationStatus":"Failed","InvokeRecordStatus":"Finished",` +
		`"ExitCode":3,"CommandId":"c-slipped","Repeats":1,"FinishedTime":"2026-12-06T00:00:00Z"}`
	for _, f := range []castest.Fault{
		{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: `{"RequestId":"r-1","TotalCount":1,"PageSize":10,"PageNumber":1,` +
			`"Invocations":{"Invocation":[{"InvokeId":"t-slipped-in","CommandId":"c-slipped","InvocationStatus":"Failed","RepeatMode":"Once",` +
			`"InvokeInstances":{"InvokeInstance":[` + other + `]}}]}}`},
		{Action: "DescribeInvocationResults", Kind: castest.FaultRaw, Body: `{"RequestId":"r-2","Invocation":{"TotalCount":1,"PageSize":10,` +
			`"PageNumber":1,"InvocationResults":{"InvocationResult":[` + other + `]}}}`},
	} {
		h.sim.ClearFaults()
		if err := h.sim.InjectFault(f); err != nil {
			t.Fatal(err)
		}
		snap, err := lister.LookUp(t.Context(), []string{hinted})
		if err != nil {
			t.Fatalf("%s slipped another invocation in: %v", f.Action, err)
		}
		for _, r := range snap.Records {
			if r.InvokeID != hinted {
				t.Errorf("%s slipped in %+v, and the look-up took it", f.Action, r)
			}
		}
		if f.Action == "DescribeInvocations" && len(snap.Records) != 0 {
			t.Errorf("with the task's kind unknown, the look-up returned %+v; want it left to the listing", snap.Records)
		}
	}
}
