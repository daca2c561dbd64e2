package poller

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/capoller/capoller/diff"
)

// Metrics records what the pollers of a process do and serves it in the
// Prometheus text format. A nil *Metrics records nothing.
type Metrics struct {
	mu     sync.Mutex
	shards map[diff.Shard]*shardMetrics
	funcs  []funcMetric
}

type funcMetric struct {
	name, help, typ string
	value           func() float64
}

type shardMetrics struct {
	cycles, failed     int64
	published, dups    int64
	records            int64
	lastSuccess        time.Time
	lastDuration       time.Duration
	failedByStage      map[Stage]int64
	backoffSecsByClass map[string]float64
	apiCalls           map[string]int64
	apiBackoffs        map[string]int64
	apiBackoffSecs     map[string]float64
	expiryHeld         int64 // records a complete listing lacked beyond the expiry guard
	expired            int64
	stagedFinished     int64
	stagedDiscarded    int64
	recoveries         int64
	recoveredRecords   int64
	owned              bool             // this replica holds the shard's lease
	acquired, lost     int64            // leases taken; claims dropped (expired, taken over)
	fenced             int64            // writes the store refused because a newer owner exists
	skipped            map[string]int64 // by reason; made on first use
	aborted            map[string]int64 // by reason; made on first use
}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics { return &Metrics{shards: map[diff.Shard]*shardMetrics{}} }

func (m *Metrics) shard(s diff.Shard) *shardMetrics {
	s.Account = diff.AccountOf(s.Account) // one series per shard id
	sm, ok := m.shards[s]
	if !ok {
		sm = &shardMetrics{failedByStage: map[Stage]int64{}, backoffSecsByClass: map[string]float64{},
			apiCalls: map[string]int64{}, apiBackoffs: map[string]int64{}, apiBackoffSecs: map[string]float64{}}
		m.shards[s] = sm
	}
	return sm
}

func (m *Metrics) observe(r Report) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sm := m.shard(r.Shard)
	sm.cycles++
	sm.published += int64(r.Published)
	sm.dups += int64(r.Duplicates)
	sm.lastDuration = r.Duration
	if r.Err != nil {
		sm.failed++
		if ce, ok := errors.AsType[*CycleError](r.Err); ok {
			sm.failedByStage[ce.Stage]++
		}
		return
	}
	sm.expired += int64(r.Expired)
	sm.records = int64(r.Records)
	sm.lastSuccess = r.Started.Add(r.Duration)
}

func (m *Metrics) backoff(s diff.Shard, class string, d time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shard(s).backoffSecsByClass[class] += d.Seconds()
}

// update changes one shard's metrics under the lock; a nil *Metrics
// records nothing.
func (m *Metrics) update(s diff.Shard, change func(*shardMetrics)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	change(m.shard(s))
}

func (m *Metrics) expiryHeld(s diff.Shard, n int) {
	m.update(s, func(sm *shardMetrics) { sm.expiryHeld += int64(n) })
}

func (m *Metrics) checkpointRecovered(s diff.Shard, records int) {
	m.update(s, func(sm *shardMetrics) { sm.recoveries++; sm.recoveredRecords += int64(records) })
}

func (m *Metrics) stagedDiscarded(s diff.Shard) {
	m.update(s, func(sm *shardMetrics) { sm.stagedDiscarded++ })
}

func (m *Metrics) stagedFinished(s diff.Shard) {
	m.update(s, func(sm *shardMetrics) { sm.stagedFinished++ })
}

// APICall counts one API call of a shard.
func (m *Metrics) APICall(s diff.Shard, action string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.shard(s).apiCalls[action]++
}

// APIBackoff records a pause before retrying one API call.
func (m *Metrics) APIBackoff(s diff.Shard, class string, d time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sm := m.shard(s)
	sm.apiBackoffs[class]++
	sm.apiBackoffSecs[class] += d.Seconds()
}

// Func exposes a process-wide value read at scrape time, such as a
// store's round trips.
func (m *Metrics) Func(name, typ, help string, value func() float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.funcs = append(m.funcs, funcMetric{name: name, help: help, typ: typ, value: value})
}

// ServeHTTP writes the metrics in the Prometheus text exposition format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	shards := make([]diff.Shard, 0, len(m.shards))
	for s := range m.shards {
		shards = append(shards, s)
	}
	slices.SortFunc(shards, func(a, b diff.Shard) int {
		if a.String() < b.String() {
			return -1
		}
		return 1
	})
	metric := func(name, typ, help string, each func(lbl string, sm *shardMetrics)) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, s := range shards {
			each(fmt.Sprintf(`account=%q,source=%q,region=%q`, s.Account, s.Source, s.Region), m.shards[s])
		}
	}
	metric("capoller_cycles_total", "counter", "Cycles run.", func(l string, sm *shardMetrics) {
		fmt.Fprintf(w, "capoller_cycles_total{%s} %d\n", l, sm.cycles)
	})
	metric("capoller_cycles_failed_total", "counter", "Cycles that failed, by stage.", func(l string, sm *shardMetrics) {
		for _, st := range Stages() {
			fmt.Fprintf(w, "capoller_cycles_failed_total{%s,stage=%q} %d\n", l, st, sm.failedByStage[st])
		}
	})
	metric("capoller_events_published_total", "counter", "Events acknowledged by JetStream as new.", func(l string, sm *shardMetrics) {
		fmt.Fprintf(w, "capoller_events_published_total{%s} %d\n", l, sm.published)
	})
	metric("capoller_events_duplicate_total", "counter", "Events JetStream already had (re-publishes after a failed commit).", func(l string, sm *shardMetrics) {
		fmt.Fprintf(w, "capoller_events_duplicate_total{%s} %d\n", l, sm.dups)
	})
	metric("capoller_records", "gauge", "Records in the last complete snapshot.", func(l string, sm *shardMetrics) {
		fmt.Fprintf(w, "capoller_records{%s} %d\n", l, sm.records)
	})
	metric("capoller_last_success_timestamp_seconds", "gauge", "When the last cycle succeeded.", func(l string, sm *shardMetrics) {
		fmt.Fprintf(w, "capoller_last_success_timestamp_seconds{%s} %d\n", l, sm.lastSuccess.Unix())
	})
	metric("capoller_cycle_duration_seconds", "gauge", "Duration of the last cycle.", func(l string, sm *shardMetrics) {
		fmt.Fprintf(w, "capoller_cycle_duration_seconds{%s} %g\n", l, sm.lastDuration.Seconds())
	})
	for _, c := range []struct {
		name, help string
		value      func(*shardMetrics) int64
	}{
		{"capoller_records_expired_total", "Records tombstoned (retention) or pruned after complete listings.",
			func(sm *shardMetrics) int64 { return sm.expired }},
		{"capoller_expiry_held_total", "Absent records whose expiry was held because one listing lacked more than the guard allows.",
			func(sm *shardMetrics) int64 { return sm.expiryHeld }},
		{"capoller_staged_batches_finished_total", "Batches staged by a cycle whose commit failed, published and committed by a later one.",
			func(sm *shardMetrics) int64 { return sm.stagedFinished }},
		{"capoller_staged_batches_discarded_total", "Staged batches that could not be decoded and were dropped.",
			func(sm *shardMetrics) int64 { return sm.stagedDiscarded }},
		{"capoller_checkpoint_recoveries_total", "Times the checkpoint of a shard that had published was found lost and rebuilt from the stream.",
			func(sm *shardMetrics) int64 { return sm.recoveries }},
		{"capoller_checkpoint_recovered_records_total", "Record states rebuilt from the stream after a lost checkpoint.",
			func(sm *shardMetrics) int64 { return sm.recoveredRecords }},
		{"capoller_lease_acquired_total", "Times this replica took the shard's lease.",
			func(sm *shardMetrics) int64 { return sm.acquired }},
		{"capoller_lease_lost_total", "Times this replica dropped the shard without handing it off: its lease expired unrenewed or a newer owner took it.",
			func(sm *shardMetrics) int64 { return sm.lost }},
		{"capoller_fencing_refusals_total", "Checkpoint writes refused because a newer owner holds the shard.",
			func(sm *shardMetrics) int64 { return sm.fenced }},
	} {
		metric(c.name, "counter", c.help, func(l string, sm *shardMetrics) {
			fmt.Fprintf(w, "%s{%s} %d\n", c.name, l, c.value(sm))
		})
	}
	metric("capoller_shard_owned", "gauge", "1 while this replica holds the shard's lease.", func(l string, sm *shardMetrics) {
		owned := 0
		if sm.owned {
			owned = 1
		}
		fmt.Fprintf(w, "capoller_shard_owned{%s} %d\n", l, owned)
	})
	metric("capoller_backoff_seconds_total", "counter", "Time spent backing off after failed cycles, by error class.", func(l string, sm *shardMetrics) {
		for _, c := range []string{"throttled", "transient", "permanent"} {
			fmt.Fprintf(w, "capoller_backoff_seconds_total{%s,class=%q} %g\n", l, c, sm.backoffSecsByClass[c])
		}
	})
	metric("capoller_api_calls_total", "counter", "Cloud Assistant API calls, retries included.", func(l string, sm *shardMetrics) {
		for _, a := range slices.Sorted(maps.Keys(sm.apiCalls)) {
			fmt.Fprintf(w, "capoller_api_calls_total{%s,action=%q} %d\n", l, a, sm.apiCalls[a])
		}
	})
	metric("capoller_api_backoffs_total", "counter", "API calls retried after a pause, by error class.", func(l string, sm *shardMetrics) {
		for _, c := range []string{"throttled", "transient"} {
			fmt.Fprintf(w, "capoller_api_backoffs_total{%s,class=%q} %d\n", l, c, sm.apiBackoffs[c])
		}
	})
	metric("capoller_api_backoff_seconds_total", "counter", "Time API calls waited before a retry, by error class.", func(l string, sm *shardMetrics) {
		for _, c := range []string{"throttled", "transient"} {
			fmt.Fprintf(w, "capoller_api_backoff_seconds_total{%s,class=%q} %g\n", l, c, sm.apiBackoffSecs[c])
		}
	})
	m.serveRecordHealth(w, shards)
	for _, f := range m.funcs {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", f.name, f.help, f.name, f.typ, f.name, f.value())
	}
}

// SkippedRecord counts one record a listing skipped because it had no id
// or no status (reason: one of cloudassist's Skip* reasons).
func (m *Metrics) SkippedRecord(s diff.Shard, reason string) {
	m.update(s, func(sm *shardMetrics) {
		if sm.skipped == nil {
			sm.skipped = map[string]int64{}
		}
		sm.skipped[reason]++
	})
}

// ListingAborted counts one listing cut short because it would never end
// (reason: one of cloudassist's Abort* reasons).
func (m *Metrics) ListingAborted(s diff.Shard, reason string) {
	m.update(s, func(sm *shardMetrics) {
		if sm.aborted == nil {
			sm.aborted = map[string]int64{}
		}
		sm.aborted[reason]++
	})
}

// serveRecordHealth writes the families of malformed input: records
// skipped and listings aborted. Called with m.mu held.
func (m *Metrics) serveRecordHealth(w http.ResponseWriter, shards []diff.Shard) {
	for _, family := range []struct {
		name, help string
		counts     func(*shardMetrics) map[string]int64
	}{
		{"capoller_records_skipped_total", "Records skipped for lack of an id or a status, by reason.",
			func(sm *shardMetrics) map[string]int64 { return sm.skipped }},
		{"capoller_listings_aborted_total", "Listings cut short because they would never end, by reason.",
			func(sm *shardMetrics) map[string]int64 { return sm.aborted }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", family.name, family.help, family.name)
		for _, s := range shards {
			counts := family.counts(m.shards[s])
			for _, reason := range slices.Sorted(maps.Keys(counts)) {
				fmt.Fprintf(w, "%s{account=%q,source=%q,region=%q,reason=%q} %d\n", family.name, diff.AccountOf(s.Account), s.Source, s.Region, reason, counts[reason])
			}
		}
	}
}
