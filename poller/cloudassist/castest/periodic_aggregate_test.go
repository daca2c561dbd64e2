package castest

import (
	"slices"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// Seed 000 (DescribeInvocations, InvokeStatus): "Periodical invocation:
// The command process can never be in the Finished (Failed, PartialFailed)
// status" and "Before you manually stop a command on periodical
// invocation, the command process is always in the Running (Running)
// status". The overall InvocationStatus waits as Scheduled between runs.
func TestPeriodicAggregateIsNeverAnOutcome(t *testing.T) {
	s, base := newServer(t)
	c := newSDK(t, base, "cn-hangzhou", nil)
	ids := ecsIDs(s, "cn-hangzhou")
	failing := c.runECS(t, "echo tick; exit 2", "Period", "rate(1s)", ids...)
	passing := c.runECS(t, "echo tick", "Period", "rate(1s)", ids...)
	histories := func(invokeID string) func() bool {
		return func() bool {
			req := ecs.CreateDescribeInvocationResultsRequest()
			req.InvokeId, req.IncludeHistory, req.MaxResults = invokeID, requests.NewBoolean(true), requests.NewInteger(50)
			resp, err := c.ecs.DescribeInvocationResults(req)
			if err != nil {
				t.Fatal(err)
			}
			done := map[string]int{}
			for _, r := range resp.Invocation.InvocationResults.InvocationResult {
				if terminal(r.InvocationStatus) {
					done[r.InstanceId]++
				}
			}
			return len(done) == len(ids) && done[ids[0]] >= 2 && done[ids[1]] >= 2
		}
	}
	waitFor(t, "two finished runs of the failing task on each instance", histories(failing))
	waitFor(t, "two finished runs of the passing task on each instance", histories(passing))

	for _, id := range []string{failing, passing} {
		inv := c.describeECS(t, id)
		if inv.InvocationStatus != stScheduled && inv.InvocationStatus != stRunning || inv.InvokeStatus != stRunning || !inv.Timed {
			t.Errorf("%s between runs: InvocationStatus %q, InvokeStatus %q, Timed %v; want Scheduled or Running, Running, true",
				id, inv.InvocationStatus, inv.InvokeStatus, inv.Timed)
		}
		// The legacy filter finds it as Running, never as an outcome.
		for status, want := range map[string]bool{"Running": true, "Finished": false, "Failed": false, "PartialFailed": false, "Success": false} {
			req := ecs.CreateDescribeInvocationsRequest()
			req.InvokeId, req.InvokeStatus = id, status
			resp, err := c.ecs.DescribeInvocations(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(resp.Invocations.Invocation) == 1; got != want {
				t.Errorf("%s: InvokeStatus=%s matches: %v, want %v", id, status, got, want)
			}
		}
	}
	for _, id := range []string{failing, passing} {
		stop := ecs.CreateStopInvocationRequest()
		stop.InvokeId = id
		if _, err := c.ecs.StopInvocation(stop); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{failing, passing} {
		waitFor(t, "the task to stop", func() bool { return lastTo(invocationTruth(s, id)) == stStopped })
		truth := invocationTruth(s, id)
		var seq []string
		for _, e := range truth {
			seq = append(seq, e.To)
			if e.From != "" && !slices.Contains([]string{stPending, stScheduled, stRunning, stStopping}, e.From) {
				t.Errorf("%s: the aggregate moved on from %q", id, e.From)
			}
			switch e.To {
			case stSuccess, stFailed, stPartialFailed, "Finished":
				t.Errorf("%s: the aggregate of a periodic task became %s: %+v", id, e.To, e)
			}
		}
		// Pending, then Scheduled and Running in turn, once per run at
		// least twice, then the stop.
		if len(seq) < 6 || seq[0] != stPending || seq[1] != stScheduled || seq[2] != stRunning || seq[3] != stScheduled {
			t.Errorf("%s: aggregate truth %v, want Pending Scheduled Running Scheduled … Stopped", id, seq)
		}
		for i := 1; i < len(truth); i++ {
			if truth[i].From != truth[i-1].To {
				t.Errorf("%s: truth does not chain at %d: %+v after %+v", id, i, truth[i], truth[i-1])
			}
		}
		if inv := c.describeECS(t, id); inv.InvocationStatus != stStopped || inv.InvokeStatus != stStopped || inv.Timed {
			t.Errorf("%s stopped: %q/%q timed %v", id, inv.InvocationStatus, inv.InvokeStatus, inv.Timed)
		}
	}
}

// A reboot task waits as Scheduled, runs at each reboot, and waits again;
// one that no instance can take is over, but never Failed.
func TestRebootTaskAggregate(t *testing.T) {
	s, base := newServer(t)
	c := newSDK(t, base, "cn-hangzhou", nil)
	ids := ecsIDs(s, "cn-hangzhou")
	every := c.runECS(t, "exit 4", "EveryReboot", "", ids[0])
	waitFor(t, "the reboot task to wait", func() bool { return lastTo(invocationTruth(s, every)) == stScheduled })
	for n := 1; n <= 2; n++ {
		if err := s.Reboot(ids[0]); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reboot run", func() bool {
			runs := 0
			for _, e := range invocationTruth(s, every) {
				if e.To == stRunning {
					runs++
				}
			}
			return runs == n && lastTo(invocationTruth(s, every)) == stScheduled
		})
	}
	var seq []string
	for _, e := range invocationTruth(s, every) {
		seq = append(seq, e.To)
	}
	if want := []string{stPending, stScheduled, stRunning, stScheduled, stRunning, stScheduled}; !slices.Equal(seq, want) {
		t.Errorf("EveryReboot aggregate truth %v, want %v", seq, want)
	}
	if inv := c.describeECS(t, every); inv.InvocationStatus != stScheduled || inv.InvokeStatus != stRunning {
		t.Errorf("EveryReboot between reboots: %q/%q, want Scheduled/Running", inv.InvocationStatus, inv.InvokeStatus)
	}

	// One instance gone: the task carries on on the other.
	if err := s.SetInstance(ids[1], InstanceReleased, ""); err != nil {
		t.Fatal(err)
	}
	half := c.runECS(t, "exit 0", "Period", "rate(1h)", ids...)
	waitFor(t, "dispatch", func() bool { return lastTo(invocationTruth(s, half)) == stScheduled })
	if inv := c.describeECS(t, half); inv.InvocationStatus != stScheduled || inv.InvokeInstances.InvokeInstance[1].InvocationStatus != stInvalid {
		t.Errorf("periodic task with a released instance: %q, instances %+v", inv.InvocationStatus, inv.InvokeInstances.InvokeInstance)
	}
	// No instance can take it: over, as Stopped, not Failed.
	none := c.runECS(t, "exit 0", "Period", "rate(1h)", ids[1])
	waitFor(t, "dispatch", func() bool { return terminal(lastTo(invocationTruth(s, none))) })
	if got := lastTo(invocationTruth(s, none)); got != stStopped {
		t.Errorf("periodic task no instance could take: %s, want Stopped", got)
	}
	if inv := c.describeECS(t, none); inv.InvocationStatus != stStopped || inv.InvokeStatus != stStopped || inv.Timed {
		t.Errorf("periodic task no instance could take: %q/%q timed %v", inv.InvocationStatus, inv.InvokeStatus, inv.Timed)
	}
	// A NextRebootOnly task runs once, so follows the one-time rules; it
	// waits as Scheduled.
	next := c.runECS(t, "exit 3", "NextRebootOnly", "", ids[0])
	waitFor(t, "the next-reboot task to wait", func() bool { return lastTo(invocationTruth(s, next)) == stScheduled })
	if err := s.Reboot(ids[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next-reboot run", func() bool { return lastTo(invocationTruth(s, next)) == stFailed })
}
