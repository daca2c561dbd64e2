package poller

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/diff"
)

// TestSummaryOfAPeriod: a shard's summary counts the period's cycles,
// failures, transitions and API calls, takes the p99 of its lags, and
// starts afresh once taken. Another shard's activity is not in it.
func TestSummaryOfAPeriod(t *testing.T) {
	m := NewMetrics(MetricsOptions{Registerer: prometheus.NewRegistry()})
	s := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	other := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-beijing"}
	seen := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	finished := func(ago time.Duration) diff.Transition {
		r := diff.Record{Key: diff.Key{InvokeID: "t-1", InstanceID: "i-1"}, Status: diff.StatusSuccess, FinishTime: seen.Add(-ago)}
		return diff.Transition{Record: r, ObservedAt: seen}
	}
	var ts []diff.Transition
	for i := 1; i <= 100; i++ {
		ts = append(ts, finished(time.Duration(i)*time.Second)) // lags 1s..100s: p99 is 99s
	}
	m.observe(Report{Shard: s, Started: seen, Records: 12, Complete: true, Transitions: ts, Published: 100})
	m.observe(Report{Shard: s, Started: seen, Err: &CycleError{StageFetch, errors.New("throttled (request 1)")}})
	m.observe(Report{Shard: other, Started: seen, Transitions: ts[:3], Published: 3})
	for range 5 {
		m.APICall(s, "DescribeInvocations")
	}
	m.APIError(s, "DescribeInvocations", "throttled", "Throttling", 400)
	m.APICall(other, "DescribeInvocations")

	sum := m.takeSummary(s)
	if sum.cycles != 2 || sum.failed != 1 || sum.transitions != 100 || sum.published != 100 || sum.apiCalls != 5 || sum.apiErrors != 1 || sum.records != 12 {
		t.Errorf("summary %+v: want 2 cycles, 1 failed, 100 transitions and events, 5 API calls, 1 error, 12 records", *sum)
	}
	if p99, ok := sum.lagP99(); !ok || p99 != 99*time.Second {
		t.Errorf("lag p99 %v (%v), want 99s", p99, ok)
	}
	if !strings.Contains(sum.lastErr, "throttled") || strings.Contains(sum.lastErr, "request 1") {
		t.Errorf("last error %q: want the failure without its request id", sum.lastErr)
	}
	again := m.takeSummary(s)
	if again.cycles != 0 || again.apiCalls != 0 || again.records != -1 || len(again.lags) != 0 {
		t.Errorf("a summary taken twice holds %+v, want a fresh one", *again)
	}
	if _, ok := again.lagP99(); ok {
		t.Error("a period without transitions has a lag p99")
	}
	if o := m.takeSummary(other); o.cycles != 1 || o.apiCalls != 1 || o.transitions != 3 {
		t.Errorf("the other shard's summary %+v", *o)
	}
	if (*Metrics)(nil).takeSummary(s) != nil {
		t.Error("nil Metrics gave a summary")
	}
}

// TestSummaryLagsStayBounded: a period of many transitions keeps a bounded
// sample of lags, and its p99 stays within the sampled range.
func TestSummaryLagsStayBounded(t *testing.T) {
	s := newSummary()
	for i := range 100_000 {
		s.addLag(float64(i % 1000))
	}
	if len(s.lags) != maxLagSamples || s.lagsSeen != 100_000 {
		t.Fatalf("kept %d of %d lags, want %d", len(s.lags), s.lagsSeen, maxLagSamples)
	}
	p99, _ := s.lagP99()
	if p99 < 900*time.Second || p99 > 999*time.Second {
		t.Errorf("p99 of a uniform 0..999s sample is %v", p99)
	}
}
