package castest

import (
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
)

func swasIDs(s *Server, region string) []string {
	var ids []string
	for _, inst := range s.Instances() {
		if inst.Product == ProductSWAS && inst.Region == region {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

// Cancelled ("canceled before it started"), Invalid and Aborted runs never
// started, so every listing gives them no StartTime; a run that did start
// and was then cut short (Terminated) keeps its StartTime.
func TestNeverStartedRunsHaveNoStartTime(t *testing.T) {
	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 4, DeliveryTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	const region = "cn-hangzhou"
	c := newSDK(t, base, region, nil)

	setup := func(ids []string) {
		// ids[0] released, ids[1] stopped, ids[2] an agent that never
		// answers (runs stay Pending until stopped), ids[3] healthy.
		for i, change := range [][2]string{{InstanceReleased, ""}, {InstanceStopped, ""}, {"", AgentNotResponding}} {
			if err := s.SetInstance(ids[i], change[0], change[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	eids, sids := ecsIDs(s, region), swasIDs(s, region)
	// The terminated runs start before their instances go.
	ecsTerminated := c.runECS(t, "hang", "", "", eids[3])
	req := swas.CreateRunCommandRequest()
	req.Type, req.CommandContent, req.InstanceId, req.Timeout = "RunShellScript", "hang", sids[3], requests.NewInteger(600)
	resp, err := c.swas.RunCommand(req)
	if err != nil {
		t.Fatal(err)
	}
	swasTerminated := resp.InvokeId
	waitFor(t, "the runs to start", func() bool {
		return s.status(ecsTerminated) == stRunning && s.status(swasTerminated) == stRunning
	})
	setup(eids)
	setup(sids)

	ecsRun := c.runECS(t, "echo hi", "", "", eids[:3]...)
	ecsSchedule := c.runECS(t, "echo hi", "Period", "rate(1h)", eids[3])
	var swasRuns []string
	for _, id := range sids[:3] {
		req := swas.CreateRunCommandRequest()
		req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo hi", id
		resp, err := c.swas.RunCommand(req)
		if err != nil {
			t.Fatal(err)
		}
		swasRuns = append(swasRuns, resp.InvokeId)
	}
	waitFor(t, "the runs on released and stopped instances to fail", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.advance(s.opts.Now())
		inv := s.byID[ecsRun]
		return inv.Runs[0].Status == stInvalid && inv.Runs[1].Status == stAborted && inv.Runs[2].Status == stPending &&
			s.byID[swasRuns[0]].Runs[0].Status == stInvalid && s.byID[swasRuns[1]].Runs[0].Status == stAborted &&
			s.byID[ecsSchedule].Runs[0].Status == stScheduled
	})
	stop := ecs.CreateStopInvocationRequest()
	stop.InvokeId = ecsRun
	if _, err := c.ecs.StopInvocation(stop); err != nil {
		t.Fatal(err)
	}
	stop = ecs.CreateStopInvocationRequest()
	stop.InvokeId = ecsSchedule
	if _, err := c.ecs.StopInvocation(stop); err != nil {
		t.Fatal(err)
	}
	if e := s.stopInvocation(DefaultAccount, ProductSWAS, region, swasRuns[2], nil); e != nil { // SWAS has no StopInvocation in casim
		t.Fatal(e)
	}
	if err := s.SetInstance(eids[3], InstanceReleased, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetInstance(sids[3], InstanceReleased, ""); err != nil {
		t.Fatal(err)
	}

	type seen struct{ status, start, finish string }
	want := map[string]string{ // instance → status
		eids[0]: stInvalid, eids[1]: stAborted, eids[2]: stCancelled, eids[3]: stTerminated,
		sids[0]: stInvalid, sids[1]: stAborted, sids[2]: stCancelled, sids[3]: stTerminated,
	}
	check := func(api string, got map[string]seen) {
		t.Helper()
		for id, status := range want {
			g, ok := got[id]
			if !ok {
				continue // not in this API's view
			}
			switch {
			case g.status != status:
				t.Errorf("%s %s: status %q, want %q", api, id, g.status, status)
			case status == stTerminated && g.start == "":
				t.Errorf("%s %s: a run that started has no StartTime", api, id)
			case status != stTerminated && g.start != "":
				t.Errorf("%s %s: a %s run that never started has StartTime %q", api, id, status, g.start)
			case g.finish == "":
				t.Errorf("%s %s: a final run has no finish time", api, id)
			}
		}
	}

	// ECS DescribeInvocations, InvokeInstances.
	got := map[string]seen{}
	for _, id := range []string{ecsRun, ecsTerminated} {
		for _, ii := range c.describeECS(t, id).InvokeInstances.InvokeInstance {
			got[ii.InstanceId] = seen{ii.InvocationStatus, ii.StartTime, ii.FinishTime}
		}
	}
	if len(got) != 4 {
		t.Fatalf("DescribeInvocations: %d instances, want 4", len(got))
	}
	check("DescribeInvocations", got)
	schedule := c.describeECS(t, ecsSchedule)
	if ii := schedule.InvokeInstances.InvokeInstance[0]; ii.InvocationStatus != stStopped || ii.StartTime != "" || ii.Repeats != 0 {
		t.Errorf("a schedule stopped before its first run: %+v", ii)
	}

	// ECS DescribeInvocationResults, with and without history.
	got = map[string]seen{}
	for _, id := range []string{ecsRun, ecsTerminated} {
		req := ecs.CreateDescribeInvocationResultsRequest()
		req.InvokeId, req.MaxResults = id, requests.NewInteger(50)
		resp, err := c.ecs.DescribeInvocationResults(req)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Invocation.InvocationResults.InvocationResult {
			got[r.InstanceId] = seen{r.InvocationStatus, r.StartTime, r.FinishedTime}
		}
	}
	if len(got) != 4 {
		t.Fatalf("DescribeInvocationResults: %d rows, want 4", len(got))
	}
	check("DescribeInvocationResults", got)
	hreq := ecs.CreateDescribeInvocationResultsRequest()
	hreq.InvokeId, hreq.IncludeHistory = ecsSchedule, requests.NewBoolean(true)
	hresp, err := c.ecs.DescribeInvocationResults(hreq)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range hresp.Invocation.InvocationResults.InvocationResult {
		if r.StartTime != "" {
			t.Errorf("history of a schedule stopped before its first run: %+v", r)
		}
	}

	// SWAS DescribeCommandInvocations.
	got = map[string]seen{}
	sreq := swas.CreateDescribeCommandInvocationsRequest()
	sreq.PageSize = "50"
	sresp, err := c.swas.DescribeCommandInvocations(sreq)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range sresp.CommandInvocations {
		for _, ii := range cmd.InvokeInstances {
			got[ii.InstanceId] = seen{ii.InvocationStatus, ii.StartTime, ii.FinishTime}
		}
	}
	if len(got) != 4 {
		t.Fatalf("DescribeCommandInvocations: %d instances, want 4", len(got))
	}
	check("DescribeCommandInvocations", got)
}
