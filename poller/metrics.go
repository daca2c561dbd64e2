package poller

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/diff"
)

// MetricsOptions configures [NewMetrics].
type MetricsOptions struct {
	// Registerer is where the metrics are registered; default a registry
	// of their own, which nothing serves. The daemon passes the registry it
	// serves on /metrics.
	Registerer prometheus.Registerer
}

// Metrics records what the pollers and the group of a process do, as
// Prometheus collectors labelled by shard (account, source, region). A
// nil *Metrics records nothing.
type Metrics struct {
	cycles        *prometheus.CounterVec
	failed        *prometheus.CounterVec // stage
	duration      *prometheus.HistogramVec
	published     *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	transitions   *prometheus.CounterVec // level, status
	lag           *prometheus.HistogramVec
	records       *prometheus.GaugeVec
	lastSuccess   *prometheus.GaugeVec
	commits       *prometheus.CounterVec
	expired       *prometheus.CounterVec
	held          *prometheus.CounterVec // expiries held by the guard
	stagedDone    *prometheus.CounterVec
	stagedDropped *prometheus.CounterVec
	recoveries    *prometheus.CounterVec
	recovered     *prometheus.CounterVec
	acquired      *prometheus.CounterVec
	lost          *prometheus.CounterVec
	fenced        *prometheus.CounterVec
	owned         *prometheus.GaugeVec
	backoffSecs   *prometheus.CounterVec // class
	apiCalls      *prometheus.CounterVec // action
	apiErrors     *prometheus.CounterVec // action, class, code
	apiBackoffs   *prometheus.CounterVec // class
	apiBackoff    *prometheus.CounterVec // class
	skipped       *prometheus.CounterVec // reason
	hints         *prometheus.CounterVec // outcome
	lookUps       *prometheus.CounterVec
	lookedUp      *prometheus.CounterVec
	hintLag       *prometheus.HistogramVec
	unhinted      *prometheus.CounterVec
	aborted       *prometheus.CounterVec // reason
	// The group's state, as this replica sees it.
	replicas, unlisted, withdrawn prometheus.Gauge

	mu    sync.Mutex
	codes map[codeSet]map[string]bool // the error codes each shard has a series of
	seen  map[diff.Shard]bool         // shards whose series exist
	// summaries gather each shard's activity for its next summary line.
	summaries map[diff.Shard]*summary
}

// shardLabels are the labels of every series, the shard's id, and extra.
func shardLabels(extra ...string) []string {
	return append([]string{"account", "source", "region"}, extra...)
}

// maxErrorCodes bounds the error codes a shard has series of: a hostile or
// broken API inventing a code per call cannot grow the registry. Codes
// beyond it are counted as "other".
const maxErrorCodes = 32

// NewMetrics registers the metrics. It panics if opts.Registerer already
// has them, as prometheus.MustRegister does: that is a programming error.
func NewMetrics(opts MetricsOptions) *Metrics {
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, shardLabels(extra...))
		reg.MustRegister(v)
		return v
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, shardLabels())
		reg.MustRegister(v)
		return v
	}
	plain := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		reg.MustRegister(g)
		return g
	}
	histogram := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, shardLabels())
		reg.MustRegister(v)
		return v
	}
	return &Metrics{
		cycles:   counter("capoller_cycles_total", "Cycles run."),
		failed:   counter("capoller_cycles_failed_total", "Cycles that failed, by the stage that failed.", "stage"),
		duration: histogram("capoller_cycle_duration_seconds", "Duration of the cycles, failed ones included.", []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
		published: counter("capoller_events_published_total",
			"Events JetStream acknowledged as new."),
		duplicates: counter("capoller_events_duplicate_total",
			"Events JetStream acknowledged as duplicates: re-publishes after a failed commit or a crash."),
		transitions: counter("capoller_transitions_total",
			"Status changes published and committed, by level (invocation, instance) and the status reached (other: a status the API documents not).", "level", "status"),
		lag: histogram("capoller_detection_lag_seconds",
			"Time from the API's own timestamp of an instance's change (its start or finish time) to the cycle that saw it.",
			[]float64{1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600}),
		records: gauge("capoller_records",
			"Records in the shard's last complete listing (an incremental cycle's pages do not count)."),
		lastSuccess: gauge("capoller_last_success_timestamp_seconds", "When the shard's last successful cycle ended."),
		commits: counter("capoller_checkpoint_commits_total",
			"Checkpoint commits: one per batch of states (and its events) written."),
		expired: counter("capoller_records_expired_total", "Records tombstoned (retention) or pruned after complete listings."),
		held: counter("capoller_expiry_held_total",
			"Absent records whose expiry was held because one listing lacked more than the guard allows."),
		stagedDone: counter("capoller_staged_batches_finished_total",
			"Batches staged by a cycle whose commit failed, published and committed by a later one."),
		stagedDropped: counter("capoller_staged_batches_discarded_total", "Staged batches that could not be decoded and were dropped."),
		recoveries: counter("capoller_checkpoint_recoveries_total",
			"Times the checkpoint of a shard that had published was found lost and rebuilt from the stream."),
		recovered: counter("capoller_checkpoint_recovered_records_total", "Record states rebuilt from the stream after a lost checkpoint."),
		acquired:  counter("capoller_lease_acquired_total", "Times this replica took the shard's lease."),
		lost: counter("capoller_lease_lost_total",
			"Times this replica dropped the shard without handing it off: its lease expired unrenewed or a newer owner took it."),
		fenced: counter("capoller_fencing_refusals_total", "Checkpoint writes refused because a newer owner holds the shard."),
		owned:  gauge("capoller_shard_owned", "1 while this replica holds the shard's lease."),
		backoffSecs: counter("capoller_backoff_seconds_total",
			"Time spent backing off after failed cycles, by error class.", "class"),
		apiCalls: counter("capoller_api_calls_total", "Cloud Assistant API calls, retries included, by action.", "action"),
		apiErrors: counter("capoller_api_errors_total",
			"Cloud Assistant API calls that failed, by action, class (throttled, transient, permanent, invalid_token) and error code "+
				"(network: no answer; HTTP_<status>: an answer without a code; other: beyond the codes counted per shard).",
			"action", "class", "code"),
		apiBackoffs: counter("capoller_api_backoffs_total", "API calls retried after a pause, by error class.", "class"),
		apiBackoff:  counter("capoller_api_backoff_seconds_total", "Time API calls waited before a retry, by error class.", "class"),
		skipped:     counter("capoller_records_skipped_total", "Records skipped for lack of an id or a status, by reason.", "reason"),
		aborted:     counter("capoller_listings_aborted_total", "Listings cut short because they would never end, by reason.", "reason"),
		hints: counter("capoller_hints_total",
			"Hints that reached the shard's owner, by outcome: queued (a look-up follows), coalesced (one for the invocation already waited), dropped (too many waited).", "outcome"),
		lookUps:  counter("capoller_hint_lookups_total", "Look-up cycles run for hints (each reads a few invocations by id)."),
		lookedUp: counter("capoller_hint_invocations_looked_up_total", "Invocations read by id for hints: one API call each."),
		hintLag: histogram("capoller_hint_lag_seconds",
			"Time from a hint reaching capoller to its invocation's terminal instance event being acknowledged and committed.",
			[]float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}),
		unhinted: counter("capoller_transitions_unhinted_total",
			"Terminal instance transitions that polling found before any hint for their invocation came: the push's misses and delays, measured (only with hints on)."),
		replicas: plain("capoller_group_replicas", "Live replicas of the group, as this replica's last heartbeat found them."),
		unlisted: plain("capoller_group_unlisted_shards",
			"Shards that no live replica lists (configured on replicas that stopped): nobody polls them. Remembered for an hour after the last replica listing one."),
		withdrawn: plain("capoller_group_withdrawn",
			"1 while this replica takes no shard because it cannot reach NATS while other replicas can."),
		codes: map[codeSet]map[string]bool{},
		seen:  map[diff.Shard]bool{},
	}
}

// values are a series' label values: the shard's id (one series per
// shard), then extra, in shardLabels' order.
func values(s diff.Shard, extra ...string) []string {
	return append([]string{diff.AccountOf(s.Account), string(s.Source), s.Region}, extra...)
}

// show makes the shard's series exist at zero, so that a rate or an alert
// on them has a value from the first scrape, owned or not.
func (m *Metrics) show(s diff.Shard) {
	if m == nil {
		return
	}
	s.Account = diff.AccountOf(s.Account)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[s] {
		return
	}
	m.seen[s] = true
	for _, v := range []*prometheus.CounterVec{m.cycles, m.published, m.duplicates, m.commits, m.expired, m.held,
		m.stagedDone, m.stagedDropped, m.recoveries, m.recovered, m.acquired, m.lost, m.fenced} {
		v.WithLabelValues(values(s)...)
	}
	for _, st := range Stages() {
		m.failed.WithLabelValues(values(s, string(st))...)
	}
	for _, c := range []string{"throttled", "transient", "permanent"} {
		m.backoffSecs.WithLabelValues(values(s, c)...)
	}
	for _, c := range []string{"throttled", "transient"} {
		m.apiBackoffs.WithLabelValues(values(s, c)...)
		m.apiBackoff.WithLabelValues(values(s, c)...)
	}
	m.owned.WithLabelValues(values(s)...)
	m.records.WithLabelValues(values(s)...)
	m.lastSuccess.WithLabelValues(values(s)...)
	m.duration.WithLabelValues(values(s)...)
	m.lag.WithLabelValues(values(s)...)
}

func (m *Metrics) observe(r Report) {
	if m == nil {
		return
	}
	m.show(r.Shard)
	shard := r.Shard
	if r.LookedUp != nil {
		// A hint's look-up: its events count, but it is no cycle of the
		// listing (capoller_hint_lookups_total counts it).
		m.published.WithLabelValues(values(shard)...).Add(float64(r.Published))
		m.duplicates.WithLabelValues(values(shard)...).Add(float64(r.Duplicates))
		m.summarize(r, m.countTransitions(shard, r.Transitions, true))
		return
	}
	m.cycles.WithLabelValues(values(shard)...).Inc()
	m.duration.WithLabelValues(values(shard)...).Observe(r.Duration.Seconds())
	m.published.WithLabelValues(values(shard)...).Add(float64(r.Published))
	m.duplicates.WithLabelValues(values(shard)...).Add(float64(r.Duplicates))
	m.summarize(r, m.countTransitions(shard, r.Transitions, !r.FirstSight))
	if r.Err != nil {
		if ce, ok := errors.AsType[*CycleError](r.Err); ok {
			m.failed.WithLabelValues(values(shard, string(ce.Stage))...).Inc()
		}
		return
	}
	m.expired.WithLabelValues(values(shard)...).Add(float64(r.Expired))
	if r.Complete {
		m.records.WithLabelValues(values(shard)...).Set(float64(r.Records))
	}
	m.lastSuccess.WithLabelValues(values(shard)...).Set(float64(r.Started.Add(r.Duration).UnixMilli()) / 1000)
}

// countTransitions counts a cycle's committed transitions by level and
// status, and observes their detection lag if lag: not for a shard's
// first sight, whose records may have changed days before. It returns the
// lags observed, in seconds.
func (m *Metrics) countTransitions(shard diff.Shard, ts []diff.Transition, lag bool) (lags []float64) {
	if len(ts) == 0 {
		return nil
	}
	type kind struct {
		level  diff.Level
		status diff.Status
	}
	counts := map[kind]int{}
	hist := m.lag.WithLabelValues(values(shard)...)
	for _, t := range ts {
		st := t.Record.Status
		if !st.Known() {
			st = "other" // the API's text, unbounded, is not a label
		}
		counts[kind{t.Level(), st}]++
		if at := apiTime(t.Record); lag && !at.IsZero() {
			l := max(t.ObservedAt.Sub(at), 0).Seconds()
			hist.Observe(l)
			lags = append(lags, l)
		}
	}
	for k, n := range counts {
		m.transitions.WithLabelValues(values(shard, string(k.level), strings.ToLower(string(k.status)))...).Add(float64(n))
	}
	return lags
}

// apiTime is the API's own time of the change a record shows: an
// instance's finish time once it ended, its start time while it runs.
// Invocations carry neither.
func apiTime(r diff.Record) time.Time {
	switch {
	case r.Level() != diff.LevelInstance:
		return time.Time{}
	case r.Status.Terminal():
		return r.FinishTime
	case r.Status == diff.StatusRunning:
		return r.StartTime
	}
	return time.Time{}
}

// add adds n to the shard's series of v.
func (m *Metrics) add(v *prometheus.CounterVec, s diff.Shard, n float64) {
	if m == nil {
		return
	}
	m.show(s)
	v.WithLabelValues(values(s)...).Add(n)
}

func (m *Metrics) backoff(s diff.Shard, class string, d time.Duration) {
	if m == nil {
		return
	}
	m.show(s)
	m.backoffSecs.WithLabelValues(values(s, class)...).Add(d.Seconds())
}

func (m *Metrics) expiryHeld(s diff.Shard, n int) {
	if m != nil {
		m.add(m.held, s, float64(n))
	}
}

func (m *Metrics) checkpointRecovered(s diff.Shard, records int) {
	if m == nil {
		return
	}
	m.add(m.recoveries, s, 1)
	m.add(m.recovered, s, float64(records))
}

func (m *Metrics) stagedDiscarded(s diff.Shard) {
	if m != nil {
		m.add(m.stagedDropped, s, 1)
	}
}

func (m *Metrics) stagedFinished(s diff.Shard) {
	if m != nil {
		m.add(m.stagedDone, s, 1)
	}
}

func (m *Metrics) committed(s diff.Shard) {
	if m != nil {
		m.add(m.commits, s, 1)
	}
}

func (m *Metrics) leaseAcquired(s diff.Shard) {
	if m == nil {
		return
	}
	m.add(m.acquired, s, 1)
	m.owned.WithLabelValues(values(s)...).Set(1)
}

// leaseDropped: the shard is no longer held; lost counts a drop without a
// hand-off, fenced one whose write a newer owner's fencing refused.
func (m *Metrics) leaseDropped(s diff.Shard, lost, fenced bool) {
	if m == nil {
		return
	}
	m.show(s)
	if lost {
		m.lost.WithLabelValues(values(s)...).Inc()
	}
	if fenced {
		m.fenced.WithLabelValues(values(s)...).Inc()
	}
	m.owned.WithLabelValues(values(s)...).Set(0)
}

// APICall counts one API call of a shard.
func (m *Metrics) APICall(s diff.Shard, action string) {
	if m == nil {
		return
	}
	m.show(s)
	m.apiCalls.WithLabelValues(values(s, action)...).Inc()
	m.countAPI(s, false)
}

// APIError counts one failed API call of a shard, by its class and error
// code (see [Metrics] for the codes that stand for none).
func (m *Metrics) APIError(s diff.Shard, action, class, code string, httpStatus int) {
	if m == nil {
		return
	}
	m.show(s)
	code = m.errorCode(s, code, httpStatus)
	m.apiErrors.WithLabelValues(values(s, action, class, code)...).Inc()
	m.countAPI(s, true)
}

// errorCode is the label of an error code: the code if it looks like one
// and the shard has fewer than maxErrorCodes others.
func (m *Metrics) errorCode(s diff.Shard, code string, httpStatus int) string {
	switch {
	case code == "" && httpStatus == 0:
		return "network"
	case code == "":
		// Bounded too, apart from the API's codes: a proxy or a broken API
		// may answer with any status of 100..999.
		return m.bounded(codeSet{s, true}, "HTTP_"+strconv.Itoa(httpStatus))
	case len(code) > 64 || strings.ContainsFunc(code, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-')
	}):
		return "other"
	}
	return m.bounded(codeSet{s, false}, code)
}

// codeSet is one shard's error codes (http: its HTTP_<status> labels).
type codeSet struct {
	shard diff.Shard
	http  bool
}

// bounded returns code, or "other" if set has maxErrorCodes others.
func (m *Metrics) bounded(set codeSet, code string) string {
	set.shard.Account = diff.AccountOf(set.shard.Account)
	m.mu.Lock()
	defer m.mu.Unlock()
	codes := m.codes[set]
	if codes == nil {
		codes = map[string]bool{}
		m.codes[set] = codes
	}
	if !codes[code] && len(codes) >= maxErrorCodes {
		return "other"
	}
	codes[code] = true
	return code
}

// APIBackoff records a pause before retrying one API call.
func (m *Metrics) APIBackoff(s diff.Shard, class string, d time.Duration) {
	if m == nil {
		return
	}
	m.show(s)
	m.apiBackoffs.WithLabelValues(values(s, class)...).Inc()
	m.apiBackoff.WithLabelValues(values(s, class)...).Add(d.Seconds())
}

// SkippedRecord counts one record a listing skipped because it had no id
// or no status (reason: one of cloudassist's Skip* reasons).
func (m *Metrics) SkippedRecord(s diff.Shard, reason string) {
	if m == nil {
		return
	}
	m.show(s)
	m.skipped.WithLabelValues(values(s, reason)...).Inc()
}

// ListingAborted counts one listing cut short because it would never end
// (reason: one of cloudassist's Abort* reasons).
func (m *Metrics) ListingAborted(s diff.Shard, reason string) {
	if m == nil {
		return
	}
	m.show(s)
	m.aborted.WithLabelValues(values(s, reason)...).Inc()
}

// groupReplicas records the live replicas the last heartbeat found.
func (m *Metrics) groupReplicas(n int) {
	if m != nil {
		m.replicas.Set(float64(n))
	}
}

// groupUnlisted records the shards no live replica lists.
func (m *Metrics) groupUnlisted(n int) {
	if m != nil {
		m.unlisted.Set(float64(n))
	}
}

// groupWithdrawn records whether this replica stepped back.
func (m *Metrics) groupWithdrawn(on bool) {
	if m != nil {
		m.withdrawn.Set(map[bool]float64{false: 0, true: 1}[on])
	}
}

// hint counts a hint that reached the shard's owner, by what became of it.
func (m *Metrics) hint(s diff.Shard, o hintOutcome) {
	if m == nil {
		return
	}
	m.show(s)
	m.hints.WithLabelValues(values(s, [...]string{"queued", "coalesced", "dropped"}[o])...).Inc()
}

// lookUp counts a look-up cycle of n invocations and the lags of the hints
// it answered.
func (m *Metrics) lookUp(s diff.Shard, n int, lags []float64) {
	if m == nil {
		return
	}
	m.show(s)
	m.lookUps.WithLabelValues(values(s)...).Inc()
	m.lookedUp.WithLabelValues(values(s)...).Add(float64(n))
	h := m.hintLag.WithLabelValues(values(s)...)
	for _, l := range lags {
		h.Observe(l)
	}
}

// unhintedTransitions counts terminal instance transitions polling found
// with no hint for their invocation.
func (m *Metrics) unhintedTransitions(s diff.Shard, n int) {
	if m == nil || n == 0 {
		return
	}
	m.unhinted.WithLabelValues(values(s)...).Add(float64(n))
}
