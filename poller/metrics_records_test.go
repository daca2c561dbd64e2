package poller

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/capoller/capoller/diff"
)

func scrape(m *Metrics) string {
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func TestMetricsCountSkippedRecordsAndAbortedListings(t *testing.T) {
	m := NewMetrics()
	s := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	m.SkippedRecord(s, "invocation_without_id")
	m.SkippedRecord(s, "invocation_without_id")
	m.SkippedRecord(s, "instance_without_status")
	m.ListingAborted(s, "token_cycle")
	(*Metrics)(nil).SkippedRecord(s, "x") // a nil registry records nothing
	(*Metrics)(nil).ListingAborted(s, "x")
	out := scrape(m)
	for _, want := range []string{
		"# TYPE capoller_records_skipped_total counter",
		`capoller_records_skipped_total{account="default",source="ecs",region="cn-hangzhou",reason="invocation_without_id"} 2`,
		`capoller_records_skipped_total{account="default",source="ecs",region="cn-hangzhou",reason="instance_without_status"} 1`,
		"# TYPE capoller_listings_aborted_total counter",
		`capoller_listings_aborted_total{account="default",source="ecs",region="cn-hangzhou",reason="token_cycle"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
}
