package poller_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
)

// TestAQuietShardLogsASummary: a running poller logs one info line per
// period, naming its shard, with the period's cycles, API calls and
// transitions as the cycles' reports and the listers' calls counted them,
// and the detection lag's p99 once instances changed.
func TestAQuietShardLogsASummary(t *testing.T) {
	h := newHarness(t)
	core, logs := observer.New(zapcore.InfoLevel)
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: prometheus.NewRegistry()})
	opts := h.listerOptions(10)
	opts.OnCall = func(action string) { metrics.APICall(shard, action) }
	src, err := cloudassist.NewECS(opts)
	if err != nil {
		t.Fatal(err)
	}
	var cycles, transitions atomic.Int64
	p := h.poller(src, h.store(), h.publisher(h.js), func(o *poller.Options) {
		o.Logger, o.Metrics, o.SummaryEvery = zap.New(core), metrics, 200*time.Millisecond
		o.OnCycle = func(r poller.Report) { cycles.Add(1); transitions.Add(int64(len(r.Transitions))) }
	})
	kill := startPoller(t, p)
	eventually(t, 5*time.Second, "the baseline cycle", func() bool { return cycles.Load() > 0 })
	h.run("echo hi", 0, h.instances[0])
	summaries := func() []observer.LoggedEntry { return logs.FilterMessage("shard summary").All() }
	eventually(t, 10*time.Second, "a summary with the run's transitions and their lag", func() bool {
		for _, e := range summaries() {
			if _, ok := e.ContextMap()["lag_p99"]; ok {
				return true
			}
		}
		return false
	})
	kill()

	var sumCycles, sumTransitions, sumCalls int64
	for _, e := range summaries() {
		f := e.ContextMap()
		if f["shard"] != shard.String() {
			t.Errorf("a summary names shard %v, want %s", f["shard"], shard)
		}
		if _, ok := f["period"].(string); !ok {
			t.Errorf("period %v: want a duration string", f["period"])
		}
		sumCycles += f["cycles"].(int64)
		sumTransitions += f["transitions"].(int64)
		sumCalls += f["api_calls"].(int64)
	}
	// The cycles after the last summary are in no line yet.
	if sumCycles == 0 || sumCycles > cycles.Load() || sumTransitions == 0 || sumTransitions > transitions.Load() {
		t.Errorf("summaries count %d cycles and %d transitions, the reports %d and %d", sumCycles, sumTransitions, cycles.Load(), transitions.Load())
	}
	if sumCalls < sumCycles {
		t.Errorf("summaries count %d API calls for %d cycles: every cycle calls the API", sumCalls, sumCycles)
	}
}
