package poller_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// TestFirstSightLagAcrossAFailedCommit is the regression test of a first
// sight's transitions reaching the detection-lag histogram after all: with
// --initial emit, a first cycle whose commit fails (Redis away for a
// moment) leaves its batch to the next cycle, which recovers the shard
// from the stream — it is known then — and reported the batch's
// transitions, days old, as an ordinary cycle's: one Redis blip at the
// first start put a day into the lag histogram (and its alert).
func TestFirstSightLagAcrossAFailedCommit(t *testing.T) {
	h := newHarness(t)
	lister, st, pub := h.parts(50)
	commits := &failCommits{Store: st}
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	p := h.poller(lister, commits, pub, func(o *poller.Options) {
		o.Initial, o.Recovery, o.Metrics = diff.InitialEmit, pub, metrics
	})
	started := time.Now().Add(-48 * time.Hour).UTC().Format("2006-01-02T15:04:05Z")
	serve := func() {
		body, err := json.Marshal(map[string]any{"RequestId": "r", "NextToken": "", "Invocations": map[string]any{"Invocation": []any{
			map[string]any{"InvokeId": "t-old", "InvocationStatus": "Running", "Parameters": "{}", "CommandId": "c-1", "CommandName": "deploy",
				"InvokeInstances": map[string]any{"InvokeInstance": []any{
					map[string]any{"InstanceId": "i-1", "InvocationStatus": "Running", "Repeats": 1, "StartTime": started}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: string(body)}); err != nil {
			t.Fatal(err)
		}
	}
	serve()
	commits.n.Store(1)
	rep := p.RunOnce(t.Context())
	if ce, ok := errors.AsType[*poller.CycleError](rep.Err); !ok || ce.Stage != poller.StageCommit || !rep.FirstSight {
		t.Fatalf("the first sight with a failed commit: %v (first sight %v)", rep.Err, rep.FirstSight)
	}
	serve()
	rep = mustRunOnce(t, p)
	if len(rep.Transitions) == 0 {
		t.Fatalf("the retry reported no transitions: %+v", rep)
	}
	if n := testenv.MetricSum(t, reg, "capoller_detection_lag_seconds"); n != 0 {
		t.Errorf("capoller_detection_lag_seconds observed %v times: the first sight's transitions, two days old, count as detection lag", n)
	}
}
