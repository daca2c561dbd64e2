package poller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/capoller/capoller/diff"
)

func TestMetricsCountSkippedRecordsAndAbortedListings(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(MetricsOptions{Registerer: reg})
	s := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	m.SkippedRecord(s, "invocation_without_id")
	m.SkippedRecord(s, "invocation_without_id")
	m.SkippedRecord(s, "instance_without_status")
	m.ListingAborted(s, "token_cycle")
	(*Metrics)(nil).SkippedRecord(s, "x") // a nil registry records nothing
	(*Metrics)(nil).ListingAborted(s, "x")
	want := `
# HELP capoller_listings_aborted_total Listings cut short because they would never end, by reason.
# TYPE capoller_listings_aborted_total counter
capoller_listings_aborted_total{account="default",reason="token_cycle",region="cn-hangzhou",source="ecs"} 1
# HELP capoller_records_skipped_total Records skipped for lack of an id or a status, by reason.
# TYPE capoller_records_skipped_total counter
capoller_records_skipped_total{account="default",reason="instance_without_status",region="cn-hangzhou",source="ecs"} 1
capoller_records_skipped_total{account="default",reason="invocation_without_id",region="cn-hangzhou",source="ecs"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "capoller_records_skipped_total", "capoller_listings_aborted_total"); err != nil {
		t.Error(err)
	}
}

// TestMetricsOfACycle: transitions count by level and status (an unknown
// status as "other"), detection lag comes from an instance's own times,
// the records gauge follows complete listings only, and error codes are
// labels only while they are few and look like codes.
func TestMetricsOfACycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(MetricsOptions{Registerer: reg})
	s := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	seen := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	instance := func(status diff.Status, start, finish time.Duration) diff.Transition {
		r := diff.Record{Key: diff.Key{InvokeID: "t-1", InstanceID: "i-1"}, Status: status}
		if start != 0 {
			r.StartTime = seen.Add(-start)
		}
		if finish != 0 {
			r.FinishTime = seen.Add(-finish)
		}
		return diff.Transition{Record: r, ObservedAt: seen}
	}
	m.observe(Report{Shard: s, Records: 7, Complete: true, Started: seen, Transitions: []diff.Transition{
		instance(diff.StatusRunning, 3*time.Second, 0),
		instance(diff.StatusFailed, 60*time.Second, 40*time.Second),
		instance("Exploded", 0, 0),
		{Record: diff.Record{Key: diff.Key{InvokeID: "t-1"}, Status: diff.StatusFailed}, ObservedAt: seen},
	}})
	m.observe(Report{Shard: s, Records: 2, Complete: false, Started: seen}) // an incremental cycle's pages
	// A first sight (InitialEmit) counts its transitions, not their lag:
	// the record finished a day before the shard was first polled.
	m.observe(Report{Shard: s, Started: seen, FirstSight: true, Transitions: []diff.Transition{instance(diff.StatusSuccess, 25*time.Hour, 24*time.Hour)}})
	for i := range maxErrorCodes + 5 {
		m.APIError(s, "DescribeInvocations", "permanent", fmt.Sprintf("Code%d", i), 400)
	}
	m.APIError(s, "DescribeInvocations", "transient", "", 0)
	m.APIError(s, "DescribeInvocations", "transient", "", 502)
	m.APIError(s, "DescribeInvocations", "permanent", "a code\nwith text", 400)
	want := `
# HELP capoller_records Records in the shard's last complete listing (an incremental cycle's pages do not count).
# TYPE capoller_records gauge
capoller_records{account="prod",region="cn-hangzhou",source="ecs"} 7
# HELP capoller_transitions_total Status changes published and committed, by level (invocation, instance) and the status reached (other: a status the API documents not).
# TYPE capoller_transitions_total counter
capoller_transitions_total{account="prod",level="instance",region="cn-hangzhou",source="ecs",status="failed"} 1
capoller_transitions_total{account="prod",level="instance",region="cn-hangzhou",source="ecs",status="other"} 1
capoller_transitions_total{account="prod",level="instance",region="cn-hangzhou",source="ecs",status="running"} 1
capoller_transitions_total{account="prod",level="instance",region="cn-hangzhou",source="ecs",status="success"} 1
capoller_transitions_total{account="prod",level="invocation",region="cn-hangzhou",source="ecs",status="failed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "capoller_records", "capoller_transitions_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		switch f.GetName() {
		case "capoller_detection_lag_seconds":
			h := f.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() != 43 {
				t.Errorf("detection lag: %d observations summing %vs, want the Running's 3s and the Failed's 40s", h.GetSampleCount(), h.GetSampleSum())
			}
		case "capoller_api_errors_total":
			codes := map[string]float64{}
			for _, s := range f.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "code" {
						codes[l.GetValue()] += s.GetCounter().GetValue()
					}
				}
			}
			if len(codes) != maxErrorCodes+3 || codes["other"] != 6 || codes["network"] != 1 || codes["HTTP_502"] != 1 || codes["Code0"] != 1 {
				t.Errorf("error codes: %v", codes)
			}
		}
	}
}

// TestMetricsBoundHTTPStatusCodes: an answer without an error code is
// labelled by its HTTP status, and those labels are bounded like codes: a
// proxy or a broken API answering with ever other statuses (any of
// 100..999) cannot grow the registry past maxErrorCodes per shard.
func TestMetricsBoundHTTPStatusCodes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(MetricsOptions{Registerer: reg})
	s := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	for status := 500; status < 500+maxErrorCodes+20; status++ {
		m.APIError(s, "DescribeInvocations", "transient", "", status)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "capoller_api_errors_total" {
			if n := len(f.GetMetric()); n > maxErrorCodes+1 {
				t.Errorf("%d series of API errors for one shard, action and class; want at most %d statuses and other", n, maxErrorCodes)
			}
		}
	}
}
