package poller

import (
	"math/rand/v2"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// maxLagSamples bounds the detection lags a summary keeps for its p99: a
// uniform sample of them beyond that (reservoir sampling), so that a
// period of a million transitions costs a few kilobytes.
const maxLagSamples = 1024

// summary is one shard's activity since its last summary line: what an
// on-call engineer reads to know that a quiet daemon is polling, and how
// well. The [Metrics] gather it, from the cycles' reports and the API
// calls the listers count.
type summary struct {
	cycles, failed int
	transitions    int
	published      int
	apiCalls       int
	apiErrors      int
	records        int // the last complete listing's, -1 if none this period
	lags           []float64
	lagsSeen       int
	lastErr        string
}

func newSummary() *summary { return &summary{records: -1} }

// addLag keeps a uniform sample of the lags seen.
func (s *summary) addLag(seconds float64) {
	s.lagsSeen++
	if len(s.lags) < maxLagSamples {
		s.lags = append(s.lags, seconds)
		return
	}
	if i := rand.IntN(s.lagsSeen); i < maxLagSamples {
		s.lags[i] = seconds
	}
}

// lagP99 is the 99th percentile of the lags sampled, and false if none.
func (s *summary) lagP99() (time.Duration, bool) {
	if len(s.lags) == 0 {
		return 0, false
	}
	sorted := slices.Clone(s.lags)
	slices.Sort(sorted)
	i := (len(sorted)*99+99)/100 - 1 // nearest rank
	return time.Duration(sorted[i] * float64(time.Second)), true
}

// summaryOf is the shard's summary, made on first use; m.mu is held.
func (m *Metrics) summaryOf(s diff.Shard) *summary {
	if m.summaries == nil {
		m.summaries = map[diff.Shard]*summary{}
	}
	sum := m.summaries[s]
	if sum == nil {
		sum = newSummary()
		m.summaries[s] = sum
	}
	return sum
}

// summarize adds a cycle's report to its shard's summary.
func (m *Metrics) summarize(r Report, lags []float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := m.summaryOf(r.Shard.Canonical())
	sum.transitions += len(r.Transitions)
	sum.published += r.Published
	for _, l := range lags {
		sum.addLag(l)
	}
	if r.LookedUp != nil {
		return // a hint's look-up: its events count, but it is no cycle
	}
	sum.cycles++
	if r.Err != nil {
		sum.failed++
		sum.lastErr = failureSignature(r.Err)
		return
	}
	if r.Complete {
		sum.records = r.Records
	}
}

// countAPI adds an API call, failed or not, to its shard's summary.
func (m *Metrics) countAPI(s diff.Shard, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := m.summaryOf(s.Canonical())
	if failed {
		sum.apiErrors++
	} else {
		sum.apiCalls++
	}
}

// takeSummary returns the shard's summary since the last take, and starts
// a new one.
func (m *Metrics) takeSummary(s diff.Shard) *summary {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := m.summaryOf(s.Canonical())
	m.summaries[s.Canonical()] = newSummary()
	return sum
}

// logSummary logs the shard's summary line for the period that ends now,
// and starts the next period.
func (p *Poller) logSummary(now time.Time) {
	sum := p.opts.Metrics.takeSummary(p.opts.Shard)
	period := now.Sub(p.summarySince)
	p.summarySince = now
	if sum == nil {
		return
	}
	if period >= time.Minute {
		period = period.Round(time.Second)
	} else {
		period = period.Round(time.Millisecond)
	}
	fields := []zap.Field{zap.Stringer("period", period),
		zap.Int("cycles", sum.cycles), zap.Int("cycles_failed", sum.failed),
		zap.Int("transitions", sum.transitions), zap.Int("events_published", sum.published),
		zap.Int("api_calls", sum.apiCalls), zap.Int("api_errors", sum.apiErrors)}
	if lag, ok := sum.lagP99(); ok {
		fields = append(fields, zap.Stringer("lag_p99", lag.Round(time.Millisecond)))
	}
	if sum.records >= 0 {
		fields = append(fields, zap.Int("records", sum.records))
	}
	if sum.lastErr != "" {
		fields = append(fields, zap.String("last_error", sum.lastErr))
	}
	p.log.Info("shard summary", fields...)
}
