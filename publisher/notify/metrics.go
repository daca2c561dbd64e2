package notify

import (
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a notifier does. It is a prometheus.Collector, to
// register on the registry that serves /metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	mu sync.Mutex
	// Events.
	consumed, acked, ignored, invalid, redelivered, givenBack int64
	hooks                                                     map[string]*hookMetrics
	gauges                                                    []gauge
}

type hookMetrics struct {
	kind                        string
	sent, digests               int64 // messages accepted; of which digests
	covered                     int64 // invocations those messages covered
	attemptsFailed, retries     int64
	deadLettered, deadLetterErr int64
	skipped, logErr             int64 // not posted again: the webhook had it; delivery log errors
	queued                      int
}

type gauge struct {
	name, help string
	value      func() float64
}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics { return &Metrics{hooks: map[string]*hookMetrics{}} }

func (m *Metrics) add(field *int64, n int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	*field += n
	m.mu.Unlock()
}

func (m *Metrics) hook(w Webhook, change func(*hookMetrics)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hooks[w.Name]
	if !ok {
		h = &hookMetrics{kind: w.Kind}
		m.hooks[w.Name] = h
	}
	change(h)
}

func (m *Metrics) gauge(name, help string, value func() float64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gauges = append(m.gauges, gauge{name, help, value})
}

// Snapshot is a copy of the counters, for tests and reports.
type Snapshot struct {
	Consumed, Acked, Ignored, Invalid, Redelivered, GivenBack int64
	Webhooks                                                  map[string]WebhookSnapshot
}

// WebhookSnapshot is one webhook's counters.
type WebhookSnapshot struct {
	Sent, Digests, Covered, AttemptsFailed, Retries, DeadLettered, DeadLetterErrors int64
	Skipped, DeliveryLogErrors                                                      int64
	Queued                                                                          int
}

// Snapshot copies the counters.
func (m *Metrics) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{Consumed: m.consumed, Acked: m.acked, Ignored: m.ignored, Invalid: m.invalid, Redelivered: m.redelivered,
		GivenBack: m.givenBack, Webhooks: map[string]WebhookSnapshot{}}
	for name, h := range m.hooks {
		s.Webhooks[name] = WebhookSnapshot{Sent: h.sent, Digests: h.digests, Covered: h.covered, AttemptsFailed: h.attemptsFailed,
			Retries: h.retries, DeadLettered: h.deadLettered, DeadLetterErrors: h.deadLetterErr,
			Skipped: h.skipped, DeliveryLogErrors: h.logErr, Queued: h.queued}
	}
	return s
}

// metricDesc is one family Collect writes.
type metricDesc struct {
	name, help string
	typ        prometheus.ValueType
}

// eventFamilies are the notifier-wide counters, in Snapshot's order.
func eventFamilies() []metricDesc {
	return []metricDesc{
		{"capoller_notify_events_consumed_total", "Events read from the stream, redeliveries included.", prometheus.CounterValue},
		{"capoller_notify_events_acked_total", "Events acknowledged: delivered, dead-lettered, or worth no message.", prometheus.CounterValue},
		{"capoller_notify_events_ignored_total", "Events acknowledged without a message: no rule wants them.", prometheus.CounterValue},
		{"capoller_notify_events_invalid_total", "Messages that are not capoller events (terminated, never redelivered).", prometheus.CounterValue},
		{"capoller_notify_events_redelivered_total", "Events the server delivered again while held or after their ack.", prometheus.CounterValue},
		{"capoller_notify_events_given_back_total", "Events handed back for redelivery (dead-letter failed, or notify stopped).", prometheus.CounterValue},
	}
}

// hookFamilies are the per-webhook families, labelled webhook and kind.
func hookFamilies() []struct {
	metricDesc
	v func(*hookMetrics) int64
} {
	return []struct {
		metricDesc
		v func(*hookMetrics) int64
	}{
		{metricDesc{"capoller_notify_messages_sent_total", "Messages a webhook accepted, digests included.", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.sent }},
		{metricDesc{"capoller_notify_digests_total", "Digest messages a webhook accepted (a storm beyond its rate limit).", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.digests }},
		{metricDesc{"capoller_notify_invocations_notified_total", "Invocations covered by accepted messages.", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.covered }},
		{metricDesc{"capoller_notify_messages_failed_total", "Posts that failed (each attempt).", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.attemptsFailed }},
		{metricDesc{"capoller_notify_retries_total", "Posts retried after a backoff.", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.retries }},
		{metricDesc{"capoller_notify_dead_lettered_total", "Invocation summaries dead-lettered after the retries ran out or a permanent refusal.", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.deadLettered }},
		{metricDesc{"capoller_notify_dead_letter_errors_total", "Dead-letter publishes that failed (their events are redelivered).", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.deadLetterErr }},
		{metricDesc{"capoller_notify_redeliveries_skipped_total", "Redelivered invocation summaries not posted again: the webhook was done with them already.", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.skipped }},
		{metricDesc{"capoller_notify_delivery_log_errors_total", "Delivery log reads or writes that failed (a redelivery may post twice).", prometheus.CounterValue}, func(h *hookMetrics) int64 { return h.logErr }},
		{metricDesc{"capoller_notify_queued", "Invocation summaries waiting for the webhook.", prometheus.GaugeValue}, func(h *hookMetrics) int64 { return int64(h.queued) }},
	}
}

// Describe is unchecked: the gauges a notifier adds are known only once
// it runs (see prometheus.Collector).
func (m *Metrics) Describe(chan<- *prometheus.Desc) {}

// Collect writes the metrics: m is a prometheus.Collector, registered by
// whoever serves them.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	values := []int64{m.consumed, m.acked, m.ignored, m.invalid, m.redelivered, m.givenBack}
	for i, f := range eventFamilies() {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(f.name, f.help, nil, nil), f.typ, float64(values[i]))
	}
	names := slices.Sorted(maps.Keys(m.hooks))
	for _, f := range hookFamilies() {
		desc := prometheus.NewDesc(f.name, f.help, []string{"webhook", "kind"}, nil)
		for _, n := range names {
			ch <- prometheus.MustNewConstMetric(desc, f.typ, float64(f.v(m.hooks[n])), n, m.hooks[n].kind)
		}
	}
	for _, g := range m.gauges {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, g.help, nil, nil), prometheus.GaugeValue, g.value())
	}
}
