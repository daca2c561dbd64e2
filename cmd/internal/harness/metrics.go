package harness

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is a scrape of a replica's /metrics, parsed by expfmt.
type Metrics map[string]*dto.MetricFamily

// ScrapeMetrics reads http://addr/metrics.
func ScrapeMetrics(ctx context.Context, addr string) (Metrics, error) {
	url := "http://" + addr + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Bounded: a replica stopped (SIGSTOP) accepts the connection and
	// never answers, and a scrape must fail then, not hang the run.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return families, nil
}

// Sum adds a metric's samples whose labels include every name=value pair
// of match (a histogram counts its observations).
func (m Metrics) Sum(name string, match ...string) float64 {
	total := 0.0
	for _, s := range m[name].GetMetric() {
		if hasLabels(s, match) {
			switch {
			case s.Counter != nil:
				total += s.GetCounter().GetValue()
			case s.Gauge != nil:
				total += s.GetGauge().GetValue()
			case s.Histogram != nil:
				total += float64(s.GetHistogram().GetSampleCount())
			default:
				total += s.GetUntyped().GetValue()
			}
		}
	}
	return total
}

func hasLabels(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == match[i] && l.GetValue() == match[i+1]
		}) {
			return false
		}
	}
	return true
}
